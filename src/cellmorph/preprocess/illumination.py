"""Retrospective illumination correction after Singh et al. 2014 (J Microscopy 256:231).

Per plate and channel: average all images, smooth with a large median filter, rescale by a
robust minimum, and divide every image by the result.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage
from skimage.transform import resize


def illumination_function(images: Iterable[np.ndarray], *, window: float = 0.4,
                          work_size: int = 64, robust_percentile: float = 2.0) -> np.ndarray:
    """The illumination function of a set of 2-D images of one channel (float32, >= ~1).

    ``window`` is the median filter's width as a fraction of the image's shorter side
    (Singh et al. used 500 px on 1280x1024 images). The filter runs on a copy shrunk to
    ``work_size`` pixels on its shorter side: a median of that width at full resolution
    costs minutes per plate and gives the same smooth field.
    """
    total, n = None, 0
    for img in images:
        total = img.astype(np.float64) if total is None else total + img
        n += 1
    if n == 0:
        raise ValueError("illumination_function needs at least one image")
    mean = (total / n).astype(np.float32)
    h, w = mean.shape
    scale = min(1.0, work_size / min(h, w))
    small = resize(mean, (max(1, round(h * scale)), max(1, round(w * scale))), order=1,
                   anti_aliasing=True, preserve_range=True)
    size = max(3, int(round(window * min(small.shape))) | 1)
    smooth = ndimage.median_filter(small, size=size, mode="reflect")
    func = resize(smooth, (h, w), order=1, preserve_range=True).astype(np.float32)
    robust_min = float(np.percentile(func, robust_percentile))
    if robust_min <= 0:
        robust_min = float(func[func > 0].min()) if (func > 0).any() else 1.0
    return np.maximum(func / robust_min, 1.0).astype(np.float32)


def correct_illumination(image: np.ndarray, functions: np.ndarray) -> np.ndarray:
    """Divide an image (C,H,W) or (H,W) by its illumination function(s), as float32."""
    out = image.astype(np.float32)  # one new array, divided in place: a pass fewer per field
    if functions.dtype == np.float32:
        return np.divide(out, functions, out=out)
    return (out / functions).astype(np.float32)
