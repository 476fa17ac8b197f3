"""Resizing and cutting fields of view into tiles (crops), and dropping empty ones.

Images are NumPy arrays or torch tensors on any device (see :mod:`.arrays`); the result is of
the same kind.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cellmorph.preprocess.arrays import Image, as_tensor, like


def resize_stack(images: Image, size: tuple[int, int]) -> Image:
    """Resize (N,C,H,W) or (C,H,W) images to ``size`` with antialiasing (area-like).

    torch's antialiased bilinear interpolation is used because it is several times faster
    than scikit-image on multi-channel stacks. uint8 images on the CPU take torch's
    fixed-point uint8 path in channels-last layout (3x faster than going through float32,
    and within one grey level of Pillow's BILINEAR resize, which it was written to match);
    on other devices, which have no such path, they are resized in float32 and rounded back
    to uint8. Other dtypes are resized in float32 and returned as float32.
    """
    x = as_tensor(images)
    squeeze = x.ndim == 3
    x = x[None] if squeeze else x
    if tuple(x.shape[-2:]) != tuple(size):
        if x.dtype == torch.uint8 and x.device.type == "cpu":
            x = F.interpolate(x.contiguous(memory_format=torch.channels_last),
                              size=tuple(size), mode="bilinear", antialias=True,
                              align_corners=False).contiguous()
        elif x.dtype == torch.uint8:
            x = resize_uint8_in_float(x, size)
        else:
            x = F.interpolate(x.float(), size=tuple(size), mode="bilinear", antialias=True,
                              align_corners=False)
    x = x.contiguous()
    return like(x[0] if squeeze else x, images)


def resize_uint8_in_float(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N,C,H,W) resized through float32 and rounded back: the uint8 path of devices
    other than the CPU (also run on the CPU by the tests, to check it against Pillow)."""
    x = F.interpolate(images.float(), size=tuple(size), mode="bilinear", antialias=True,
                      align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def grid_tiles(image: Image, rows: int, cols: int) -> Image:
    """Cut a (C,H,W) image into a rows x cols grid of equal tiles -> (rows*cols, C, h, w).

    Kensert et al. cut 1024x1280 images into 2x2 crops of 512x640; the remainder of a side
    that does not divide evenly is dropped.
    """
    c, h, w = image.shape
    th, tw = h // rows, w // cols
    if th < 1 or tw < 1:
        raise ValueError(f"a {rows}x{cols} grid does not fit a {h}x{w} image")
    x = as_tensor(image)
    tiles = x[:, : th * rows, : tw * cols].reshape(c, rows, th, cols, tw)
    return like(tiles.permute(1, 3, 0, 2, 4).reshape(rows * cols, c, th, tw).contiguous(), image)


def random_tiles(image: Image, n: int, size: tuple[int, int],
                 rng: np.random.Generator) -> Image:
    """``n`` tiles of ``size`` at random positions (seeded ``rng``) -> (n, C, h, w)."""
    c, h, w = image.shape
    th, tw = size
    if th > h or tw > w:
        raise ValueError(f"tile size {size} is larger than the image ({h}x{w})")
    ys = rng.integers(0, h - th + 1, n)
    xs = rng.integers(0, w - tw + 1, n)
    x = as_tensor(image)
    return like(torch.stack([x[:, y : y + th, x0 : x0 + tw]
                             for y, x0 in zip(ys.tolist(), xs.tolist(), strict=True)]), image)


def nonempty_tiles(tiles: np.ndarray, *, threshold: int = 50,
                   min_fraction: float = 0.002) -> np.ndarray:
    """Boolean mask of uint8 tiles with more than ``min_fraction`` of pixels above ``threshold``.

    NumPy only: the fraction is compared in float64, so that the same tiles give the same
    mask wherever they were made.

    Kensert et al. drop crops with at most 0.2 % of pixels above 50 (mostly background).
    """
    flat = tiles.reshape(tiles.shape[0], int(np.prod(tiles.shape[1:])))
    return (flat > threshold).mean(axis=1) > min_fraction
