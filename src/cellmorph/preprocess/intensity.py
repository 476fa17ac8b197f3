"""Intensity transforms: Anscombe, normalisation to DMSO controls, rescaling to 8 bits."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def anscombe(image: np.ndarray) -> np.ndarray:
    """Variance-stabilising Anscombe transform 2*sqrt(x + 3/8) for Poisson-like counts."""
    return (2.0 * np.sqrt(image.astype(np.float32) + 3.0 / 8.0)).astype(np.float32)


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


def normalise_to_controls(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Subtract the control mean and divide by the control std, per channel."""
    return ((image - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


def rescale_to_uint8(image: np.ndarray, *, per_channel: bool = False,
                     low: np.ndarray | float | None = None,
                     high: np.ndarray | float | None = None) -> np.ndarray:
    """Map [low, high] linearly to [0, 255] (default: the image's own min and max).

    ``per_channel`` rescales each channel separately; explicit ``low``/``high`` (scalars or
    per-channel arrays) fix the range across images, e.g. plate-wide percentiles.
    """
    x = np.asarray(image, np.float32)
    axes = (1, 2) if per_channel else None
    lo = np.asarray(x.min(axis=axes, keepdims=per_channel) if low is None else low, np.float32)
    hi = np.asarray(x.max(axis=axes, keepdims=per_channel) if high is None else high, np.float32)
    if lo.ndim == 1:
        lo, hi = lo[:, None, None], hi[:, None, None]
    span = np.maximum(hi - lo, 1e-6)
    # In place on one scratch array: the same float32 operations in the same order as
    # round(clip((x - lo) / span * 255)), at a third of the memory traffic.
    y = np.subtract(x, lo, dtype=np.float32)
    y /= span
    y *= np.float32(255.0)
    np.round(y, out=y)
    np.clip(y, 0, 255, out=y)
    return y.astype(np.uint8)
