"""Resizing and cutting fields of view into tiles (crops), and dropping empty ones."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_stack(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (N,C,H,W) or (C,H,W) images to ``size`` with antialiasing (area-like).

    torch's antialiased bilinear interpolation is used because it is several times faster
    than scikit-image on multi-channel stacks. uint8 images take torch's fixed-point uint8
    path in channels-last layout (3x faster than going through float32, and within one grey
    level of Pillow's BILINEAR resize, which it was written to match); other dtypes are
    resized in float32 and returned as float32.
    """
    squeeze = images.ndim == 3
    x = torch.from_numpy(np.ascontiguousarray(images[None] if squeeze else images))
    if tuple(x.shape[-2:]) != tuple(size):
        if x.dtype == torch.uint8:
            x = F.interpolate(x.contiguous(memory_format=torch.channels_last),
                              size=tuple(size), mode="bilinear", antialias=True,
                              align_corners=False).contiguous()
        else:
            x = F.interpolate(x.float(), size=tuple(size), mode="bilinear", antialias=True,
                              align_corners=False)
    out = x.numpy()
    return out[0] if squeeze else out


def grid_tiles(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Cut a (C,H,W) image into a rows x cols grid of equal tiles -> (rows*cols, C, h, w).

    Kensert et al. cut 1024x1280 images into 2x2 crops of 512x640; the remainder of a side
    that does not divide evenly is dropped.
    """
    c, h, w = image.shape
    th, tw = h // rows, w // cols
    if th < 1 or tw < 1:
        raise ValueError(f"a {rows}x{cols} grid does not fit a {h}x{w} image")
    tiles = image[:, : th * rows, : tw * cols].reshape(c, rows, th, cols, tw)
    return np.ascontiguousarray(tiles.transpose(1, 3, 0, 2, 4).reshape(rows * cols, c, th, tw))


def random_tiles(image: np.ndarray, n: int, size: tuple[int, int],
                 rng: np.random.Generator) -> np.ndarray:
    """``n`` tiles of ``size`` at random positions (seeded ``rng``) -> (n, C, h, w)."""
    c, h, w = image.shape
    th, tw = size
    if th > h or tw > w:
        raise ValueError(f"tile size {size} is larger than the image ({h}x{w})")
    ys = rng.integers(0, h - th + 1, n)
    xs = rng.integers(0, w - tw + 1, n)
    return np.stack([image[:, y : y + th, x : x + tw] for y, x in zip(ys, xs, strict=True)])


def nonempty_tiles(tiles: np.ndarray, *, threshold: int = 50,
                   min_fraction: float = 0.002) -> np.ndarray:
    """Boolean mask of uint8 tiles with more than ``min_fraction`` of pixels above ``threshold``.

    Kensert et al. drop crops with at most 0.2 % of pixels above 50 (mostly background).
    """
    flat = tiles.reshape(tiles.shape[0], -1)
    return (flat > threshold).mean(axis=1) > min_fraction
