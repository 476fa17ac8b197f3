"""Retrospective illumination correction after Singh et al. 2014 (J Microscopy 256:231).

Per plate and channel: average all images, smooth with a large median filter, rescale by a
robust minimum, and divide every image by the result.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from scipy import ndimage

from cellmorph.preprocess.arrays import Image, as_tensor, constant, like
from cellmorph.preprocess.tiling import resize_stack


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
    # Shrunk and grown back with torch's antialiased bilinear resize (resize_stack): a tenth of
    # the time of scikit-image's Gaussian-prefiltered resize at 1024x1280, and the median
    # filter that follows makes the two filters' small differences irrelevant.
    small = resize_stack(mean[None], (max(1, round(h * scale)), max(1, round(w * scale))))[0]
    size = max(3, int(round(window * min(small.shape))) | 1)
    smooth = ndimage.median_filter(small, size=size, mode="reflect")
    func = resize_stack(smooth[None], (h, w))[0]
    # The robust minimum is taken on the small smooth field, which the full-size one only
    # interpolates: a percentile of 5,000 pixels instead of 1.3 million, and within a fraction
    # of a percent of it on a smooth field.
    robust_min = float(np.percentile(smooth, robust_percentile))
    if robust_min <= 0:
        robust_min = float(smooth[smooth > 0].min()) if (smooth > 0).any() else 1.0
    return np.maximum(func / robust_min, 1.0).astype(np.float32)


def correct_illumination(image: Image, functions: np.ndarray | torch.Tensor) -> Image:
    """Divide an image (C,H,W) or (H,W) by its illumination function(s), as float32.

    A NumPy array or a tensor on any device; ``functions`` are moved to the image's device
    (pass them there once per plate to avoid a copy per field).
    """
    x = as_tensor(image)
    # one new float32 array, divided in place: a pass fewer per field than x / functions
    return like(x.to(torch.float32, copy=True).div_(constant(functions, x)), image)
