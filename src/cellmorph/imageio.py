"""Reading fields of view: tifffile for TIFF, Pillow for BMP/PNG; shape and dtype checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from cellmorph.errors import CellmorphError
from cellmorph.schema import path_column

_TIFF = (".tif", ".tiff")
ALLOWED_DTYPES = (np.uint8, np.uint16, np.float32)


def read_image(path: Path | str, *, dtype: np.dtype | None = None,
               shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read one single-channel image as a 2-D array; check ``dtype`` and ``shape`` if given."""
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF:
            img = tifffile.imread(path)
        else:
            with Image.open(path) as im:
                img = np.asarray(im.convert("L") if im.mode in ("RGB", "P", "RGBA") else im)
    except FileNotFoundError:
        raise CellmorphError(f"{path}: image file not found; re-index the screen") from None
    except (tifffile.TiffFileError, UnidentifiedImageError, OSError, ValueError, IndexError) as exc:
        raise CellmorphError(f"{path}: unreadable or truncated image ({exc}); "
                             "re-download or re-export this file") from exc
    img = np.squeeze(img)
    if img.ndim != 2:
        raise CellmorphError(f"{path}: expected a single-channel 2-D image, got shape {img.shape}; "
                             "export one file per stain")
    if not any(img.dtype == d for d in ALLOWED_DTYPES):
        raise CellmorphError(f"{path}: unsupported pixel type {img.dtype}; use 8- or 16-bit "
                             "unsigned integers or float32")
    if dtype is not None and img.dtype != np.dtype(dtype):
        raise CellmorphError(f"{path}: pixel type {img.dtype}, but the other images of this screen "
                             f"are {np.dtype(dtype)}; re-export it like the others")
    if shape is not None and img.shape != tuple(shape):
        raise CellmorphError(f"{path}: shape {img.shape}, expected {tuple(shape)} like the other "
                             "images of this screen; re-export it or index it separately")
    return img


def read_field(row: Mapping[str, object], channels: Sequence[str], *,
               dtype: np.dtype | None = None,
               shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read all stains of one index row into a (channels, height, width) array."""
    planes = []
    for ch in channels:
        col = path_column(ch)
        if col not in row or row[col] is None:
            raise CellmorphError(f"index row {dict(row).get('Metadata_Well', '?')}: channel {ch!r} "
                                 "has no image path; re-index with that channel")
        img = read_image(str(row[col]), dtype=dtype, shape=shape)
        dtype, shape = img.dtype, img.shape  # every stain of a field must agree
        planes.append(img)
    return np.stack(planes)
