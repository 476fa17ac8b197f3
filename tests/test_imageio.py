"""Image reading: formats, shape/dtype checks, damaged files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellmorph.errors import CellmorphError
from cellmorph.imageio import read_field, read_image


def test_reads_tiff_and_bmp(tmp_path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", np.arange(12, dtype=np.uint16).reshape(3, 4))
    Image.fromarray(np.full((3, 4), 7, np.uint8)).save(tmp_path / "b.Bmp", format="BMP")
    assert read_image(tmp_path / "a.tif")[2, 3] == 11
    assert read_image(tmp_path / "b.Bmp").dtype == np.uint8
    stack = read_field({"Path_x": str(tmp_path / "a.tif"), "Path_y": str(tmp_path / "a.tif")},
                       ["x", "y"])
    assert stack.shape == (2, 3, 4)


def test_truncated_tiff_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, np.ones((64, 64), np.uint16))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CellmorphError, match=r"t\.tif: unreadable or truncated"):
        read_image(path)


def test_shape_dtype_and_channel_checks(tmp_path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", np.ones((4, 4), np.uint16))
    tifffile.imwrite(tmp_path / "b.tif", np.ones((4, 5), np.uint16))
    tifffile.imwrite(tmp_path / "c.tif", np.ones((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "rgb.tif", np.ones((4, 4, 3), np.uint16))
    with pytest.raises(CellmorphError, match=r"b\.tif: shape \(4, 5\), expected \(4, 4\)"):
        read_field({"Path_x": str(tmp_path / "a.tif"), "Path_y": str(tmp_path / "b.tif")},
                   ["x", "y"])
    with pytest.raises(CellmorphError, match=r"c\.tif: pixel type uint8"):
        read_image(tmp_path / "c.tif", dtype=np.uint16)
    with pytest.raises(CellmorphError, match="single-channel"):
        read_image(tmp_path / "rgb.tif")
    with pytest.raises(CellmorphError, match="channel 'z' has no image path"):
        read_field({"Path_x": str(tmp_path / "a.tif")}, ["x", "z"])
