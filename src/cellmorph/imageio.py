"""Reading fields of view: tifffile for TIFF, Pillow for BMP/PNG; shape and dtype checked.

Limits, checked from the file header before any pixel is read: a plane may have at most
``MAX_PIXELS`` pixels (268 million, e.g. 16384 x 16384) and at least ``MIN_SIDE`` pixels on
each side (tiling asks for more: crops of at least 8 pixels). Float images must be finite:
a NaN or infinite pixel is an error naming the file (it would otherwise poison the plate's
statistics and every image normalised with them).
"""

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
MAX_PIXELS = 1 << 28
MIN_SIDE = 2


class FieldMismatch(CellmorphError):
    """An image whose shape or pixel type differs from the first one read of its plate."""


def read_image(path: Path | str, *, dtype: np.dtype | None = None,
               shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read one single-channel image as a 2-D array; check ``dtype`` and ``shape`` if given.

    Palette images with a grey palette (BBBC014's TIFFs and BMPs) are read as their grey
    values, whichever reader opens them.
    """
    path = Path(path)
    try:
        img = _read_tiff(path) if path.suffix.lower() in _TIFF else _read_pillow(path)
    except FileNotFoundError:
        raise CellmorphError(f"{path}: image file not found; re-index the screen") from None
    except Image.DecompressionBombError as exc:  # Pillow's own header check came first
        raise CellmorphError(f"{path}: the header claims more pixels than the limit ({exc}); "
                             "is the file damaged?") from None
    except (tifffile.TiffFileError, UnidentifiedImageError, OSError, ValueError, IndexError,
            KeyError) as exc:
        raise CellmorphError(f"{path}: unreadable or truncated image ({exc}); "
                             "re-download or re-export this file") from exc
    if img.ndim >= 2 and min(img.shape[-2:]) < MIN_SIDE and img.shape[-1] not in (3, 4):
        raise CellmorphError(f"{path}: {img.shape[-2]}x{img.shape[-1]} pixels is too small for a "
                             f"field of view (at least {MIN_SIDE} on each side)")
    img = np.squeeze(img)
    if img.ndim != 2:
        raise CellmorphError(f"{path}: expected a single-channel 2-D image, got shape {img.shape}; "
                             "export one file per stain")
    if not any(img.dtype == d for d in ALLOWED_DTYPES):
        raise CellmorphError(f"{path}: unsupported pixel type {img.dtype}; use 8- or 16-bit "
                             "unsigned integers or float32")
    if img.dtype.kind == "f":
        bad = int(np.size(img) - np.count_nonzero(np.isfinite(img)))
        if bad:
            raise CellmorphError(f"{path}: {bad} pixel(s) are NaN or infinite; re-export the "
                                 "image with finite values (or mask them as 0)")
    if dtype is not None and img.dtype != np.dtype(dtype):
        raise FieldMismatch(f"{path}: pixel type {img.dtype}, but the other images of this screen "
                             f"are {np.dtype(dtype)}; re-export it like the others")
    if shape is not None and img.shape != tuple(shape):
        raise FieldMismatch(f"{path}: shape {img.shape}, expected {tuple(shape)} like the other "
                             "images of this screen; re-export it or index it separately")
    return img


_PILLOW_DTYPES = {"I;16": np.uint16, "I;16B": np.uint16, "F": np.float32, "I": np.int32}


def image_header(path: Path | str) -> tuple[tuple[int, ...], np.dtype]:
    """An image's shape and pixel type, read from its header alone (no pixels decoded)."""
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return tuple(s for s in page.shape if s != 1), np.dtype(page.dtype)
        with Image.open(path) as im:
            return (im.size[1], im.size[0]), np.dtype(_PILLOW_DTYPES.get(im.mode, np.uint8))
    except Exception as exc:  # readers raise many types; read_image names them properly
        raise CellmorphError(f"{path}: unreadable or truncated image ({exc}); re-download or "
                             "re-export this file") from None


def odd_images(paths: Sequence[str]) -> str:
    """Which of ``paths`` differ in shape or pixel type from the majority, in words (the files
    to blame, however the first one read looked)."""
    headers = {p: image_header(p) for p in paths}
    values = list(headers.values())
    common = max(set(values), key=values.count)
    odd = [p for p, h in headers.items() if h != common]
    shown = ", ".join(f"{p} ({'x'.join(map(str, headers[p][0]))} {headers[p][1]})"
                      for p in odd[:3]) + (", ..." if len(odd) > 3 else "")
    return (f"{len(odd)} of {len(paths)} images differ from the others of their plate "
            f"({'x'.join(map(str, common[0]))} {common[1]}): {shown}; re-export them like the "
            "others or index them separately")


def _check_size(path: Path, shape: Sequence[int]) -> None:
    pixels = int(np.prod([int(s) for s in shape])) if len(shape) else 0
    if pixels > MAX_PIXELS:
        raise CellmorphError(f"{path}: the header claims {'x'.join(map(str, shape))} pixels, "
                             f"more than the limit of {MAX_PIXELS:,} per image; is the file "
                             "damaged?")


def _read_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise ValueError("no image in the file")
        _check_size(path, tif.pages[0].shape)
        # The first page only: palette TIFFs are read as their index (grey) values.
        return tif.pages[0].asarray()


def _read_pillow(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        _check_size(path, (im.size[1], im.size[0]))
        if im.mode == "P" and _grey_palette(im):
            return np.asarray(im)  # identity grey palette: the indices are the grey values
        return np.asarray(im.convert("L") if im.mode in ("RGB", "P", "RGBA", "LA") else im)


def _grey_palette(im: Image.Image) -> bool:
    palette = np.asarray(im.getpalette() or [], np.int32).reshape(-1, 3)
    n = len(palette)
    return n > 0 and bool((palette == np.arange(n)[:, None]).all())


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
