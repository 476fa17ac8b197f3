"""Image quality of a decoded field, per stain, measured on the pixels as the microscope
recorded them (before any correction), while the tile cache reads them anyway: no extra
pass over the images.

- *focus*: the variance of the Laplacian over the squared mean intensity (a scale-free
  sharpness; CellProfiler's ``MeasureImageQuality`` reports the same family of scores). A
  defocused field loses its fine structure, and with it Laplacian energy.
- *saturated*: the fraction of pixels at the stain's maximum value in the field
  (CellProfiler's "percent maximal"): a few pixels in a healthy field, a blob in a
  saturated one.
- *foreground*: the fraction of pixels more than 3 robust standard deviations (1.4826 MAD)
  above the field's median, from a sample of the field: where cells cover less than half
  the field the median is its background, so an empty well's noise stays near 0.1 % while
  cells give a share of the field (Otsu's threshold would split pure noise in half).

Flags come later, per plate and against the plate's own fields
(:func:`cellmorph.profiling.qc.flag_fields`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import laplace

MEASURES = ("Focus", "Saturated", "Foreground")
_FOCUS_STRIDE = 3
_SAMPLE = 8  # foreground from every 8th pixel in both directions (1.6 % of the pixels)


def focus_score(plane: np.ndarray) -> float:
    """Variance of the Laplacian divided by the squared mean (0 for a flat plane).

    >>> rng = np.random.default_rng(0)
    >>> sharp = rng.random((64, 64))
    >>> from scipy.ndimage import gaussian_filter
    >>> focus_score(gaussian_filter(sharp, 2)) < focus_score(sharp)
    True
    """
    values = plane.astype(np.float32)
    mean = float(values.mean())
    if mean <= 0:
        return 0.0
    return float(laplace(values).var() / mean**2)


def saturated_fraction(plane: np.ndarray) -> float:
    """The fraction of pixels at the plane's maximum (0 for a constant plane).

    >>> plane = np.zeros((10, 10)); plane[:2] = 7.0; plane[5, 5] = 3.0
    >>> saturated_fraction(plane)
    0.2
    """
    top = plane.max()
    if top == plane.min():
        return 0.0
    return float(np.count_nonzero(plane == top) / plane.size)


def foreground_fraction(plane: np.ndarray) -> float:
    """The fraction of a sample of the plane more than 3 robust SDs above its median.

    >>> rng = np.random.default_rng(0)
    >>> empty = rng.normal(100, 5, (128, 128))
    >>> cells = empty.copy(); cells[:32] += 200
    >>> round(foreground_fraction(empty), 3), round(foreground_fraction(cells), 2)
    (0.0, 0.25)
    """
    sample = plane[::_SAMPLE, ::_SAMPLE].astype(np.float64)
    median = float(np.median(sample))
    spread = 1.4826 * float(np.median(np.abs(sample - median)))
    spread = max(spread, 1e-3 * (float(sample.max()) - median))  # a flat background
    if spread <= 0:
        return 0.0
    return float((sample > median + 3 * spread).mean())


def field_quality(field: np.ndarray) -> np.ndarray:
    """(stains, 3): focus, saturated and foreground fractions of each stain of a (C, H, W)
    field. Focus is measured on every third pixel in both directions (a ninth of the cost;
    a blur wider than three pixels still shows), saturation on the whole field, foreground
    on every eighth pixel: about 1.5 ms a stain of 1024x1280 (scipy's Laplacian), in the
    threads that decode the fields."""
    return np.array([[focus_score(p[::_FOCUS_STRIDE, ::_FOCUS_STRIDE]),
                      saturated_fraction(p), foreground_fraction(p)]
                     for p in field], dtype=np.float64)
