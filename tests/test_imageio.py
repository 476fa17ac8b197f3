"""Image reading: formats, shape/dtype checks, damaged files."""

from __future__ import annotations

from pathlib import Path

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


def test_non_finite_pixels_name_the_image(tmp_path) -> None:
    img = np.ones((16, 16), np.float32)
    img[3, 4] = np.nan
    img[5, 5] = np.inf
    tifffile.imwrite(tmp_path / "nan.tif", img)
    with pytest.raises(CellmorphError, match=r"nan\.tif: 2 pixel\(s\) are NaN or infinite"):
        read_image(tmp_path / "nan.tif")


def test_too_small_and_too_large_images(tmp_path) -> None:
    tifffile.imwrite(tmp_path / "dot.tif", np.ones((1, 1), np.uint16))
    with pytest.raises(CellmorphError, match=r"dot\.tif: 1x1 pixels is too small"):
        read_image(tmp_path / "dot.tif")
    # A header that claims 100000 x 100000 pixels is refused before anything is allocated.
    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, np.ones((16, 16), np.uint16))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(100000)
        tif.pages[0].tags["ImageLength"].overwrite(100000)
    with pytest.raises(CellmorphError, match=r"huge\.tif: the header claims 100000x100000"):
        read_image(path)
    bmp = tmp_path / "huge.bmp"
    bmp.write_bytes(_bmp_header(40000, 40000))
    with pytest.raises(CellmorphError, match=r"huge\.bmp: the header claims more pixels"):
        read_image(bmp)


def _bmp_header(width: int, height: int) -> bytes:
    """A BMP file whose header claims ``width`` x ``height`` 8-bit pixels (no pixel data)."""
    import struct

    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, width * height, 2835, 2835,
                       256, 0)
    palette = bytes(b for i in range(256) for b in (i, i, i, 0))
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset, 0, 0, offset) + info + palette


def test_palette_tiff_reads_as_grey_values_with_both_readers(tmp_path) -> None:
    """BBBC014's TIFFs are palette images with an identity grey palette (real files)."""
    sample = Path(__file__).parent / "data" / "bbbc014" / "Channel 2-01-A-01-00.tif"
    grey = tifffile.imread(sample)
    assert grey.dtype == np.uint8 and grey.ndim == 2
    with Image.open(sample) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), grey)
        im.save(tmp_path / "palette.bmp")  # the official set's .Bmp files, also palette images
    np.testing.assert_array_equal(read_image(sample), grey)
    np.testing.assert_array_equal(read_image(tmp_path / "palette.bmp"), grey)
