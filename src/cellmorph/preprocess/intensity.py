"""Intensity transforms: Anscombe, normalisation to DMSO controls, rescaling to 8 bits.

Images are NumPy arrays or torch tensors on any device (see :mod:`.arrays`); the result is of
the same kind.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from cellmorph.preprocess.arrays import Image, as_tensor, constant, like


def anscombe(image: Image) -> Image:
    """Variance-stabilising Anscombe transform 2*sqrt(x + 3/8) for Poisson-like counts."""
    x = as_tensor(image).to(torch.float32) + 0.375
    # torch's float32 square root on the CPU is not correctly rounded (one unit in the last
    # place off NumPy's); taken in float64 and rounded back it is, on every device.
    return like(torch.sqrt(x.double()).to(torch.float32).mul_(2.0), image)


def control_statistics(images: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over every pixel of (C,H,W) control images.

    Accumulated in float64 sums so a whole plate's controls never sit in memory at once.
    """
    s = ss = None
    n = 0
    for img in images:
        x = img.reshape(img.shape[0], -1).astype(np.float64)
        s = x.sum(1) if s is None else s + x.sum(1)
        ss = (x**2).sum(1) if ss is None else ss + (x**2).sum(1)
        n += x.shape[1]
    if n == 0:
        raise ValueError("control_statistics needs at least one control image")
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean**2, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)


def normalise_to_controls(image: Image, mean: np.ndarray | torch.Tensor,
                          std: np.ndarray | torch.Tensor) -> Image:
    """Subtract the control mean and divide by the control std, per channel (float32)."""
    x = as_tensor(image).to(torch.float32)
    mean, std = constant(mean, x).view(-1, 1, 1), constant(std, x).view(-1, 1, 1)
    return like((x - mean).div_(std), image)


def rescale_to_uint8(image: Image, *, per_channel: bool = False,
                     low: np.ndarray | torch.Tensor | float | None = None,
                     high: np.ndarray | torch.Tensor | float | None = None) -> Image:
    """Map [low, high] linearly to [0, 255] (default: the image's own min and max).

    ``per_channel`` rescales each channel separately; explicit ``low``/``high`` (scalars or
    per-channel arrays) fix the range across images, e.g. plate-wide percentiles.
    """
    x = as_tensor(image).to(torch.float32)
    if low is None:
        low = x.amin(dim=(1, 2), keepdim=True) if per_channel else x.min()
    if high is None:
        high = x.amax(dim=(1, 2), keepdim=True) if per_channel else x.max()
    lo, hi = constant(low, x), constant(high, x)
    if lo.ndim == 1:
        lo, hi = lo.view(-1, 1, 1), hi.view(-1, 1, 1)
    span = torch.clamp(hi - lo, min=1e-6)
    # One new array, then in place: the same float32 operations in the same order as
    # round(clip((x - lo) / span * 255)), at a third of the memory traffic.
    y = (x - lo).div_(span).mul_(255.0).round_().clamp_(0, 255)
    return like(y.to(torch.uint8), image)
