"""Where the cells are: nuclei found on the nuclear stain, as centres (CellProfiler's layout).

The detector is the translocation readout's (Otsu threshold on the smoothed stain, objects
under a minimum area dropped), with touching nuclei split by a distance-transform watershed
(scikit-image) and objects over a maximum area dropped as clumps or debris. Each nucleus's
centre is its centroid, as CellProfiler's ``Location_Center_X/Y``; a centroid that falls
outside its own nucleus (a crescent) is moved to the nucleus's pixel nearest to it, so that
every centre lies on its nucleus.

scikit-image runs on the CPU: fields are decoded there anyway, and preprocessing workers
find the nuclei of one field while the device embeds another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import feature, filters, measure, segmentation

from cellmorph import schema as sc

OBJECT, CENTER_X, CENTER_Y = sc.OBJECT_NUMBER, sc.CP_CENTER_X, sc.CP_CENTER_Y
AREA = "AreaShape_Area"


@dataclass(frozen=True)
class NucleusSettings:
    """How nuclei are found: smoothing, the area range, how far apart split nuclei lie."""

    smooth: float = 2.0  # Gaussian sigma before thresholding, pixels
    min_area: int = 50  # smallest nucleus (before splitting), pixels
    max_area: int = 4000  # largest nucleus kept (after splitting), pixels
    split_distance: int = 7  # smallest distance between the centres of touching nuclei


def label_nuclei(nuclear: np.ndarray, *, smooth: float = 2.0, min_area: int = 50) -> np.ndarray:
    """Labels of the nuclei of one field: Otsu on the smoothed stain, small objects dropped.

    Touching nuclei share one label here (see :func:`split_touching`).

    >>> img = np.zeros((40, 40)); img[5:15, 5:15] = 1; img[25:35, 20:30] = 1
    >>> int(label_nuclei(img, smooth=1, min_area=20).max())
    2
    """
    smoothed = filters.gaussian(nuclear.astype(np.float32), smooth, preserve_range=True)
    if float(smoothed.max()) <= float(smoothed.min()):
        return np.zeros(nuclear.shape, np.int32)
    labels = measure.label(smoothed > filters.threshold_otsu(smoothed)).astype(np.int32)
    sizes = np.bincount(labels.ravel())
    too_small = sizes < min_area
    too_small[0] = False
    labels[too_small[labels]] = 0
    return labels


def split_touching(labels: np.ndarray, *, min_distance: int = 7) -> np.ndarray:
    """Each labelled object cut into the nuclei it holds: watershed on the distance
    transform from its maxima at least ``min_distance`` apart. Objects are only ever cut,
    never merged, and every piece lies inside one original object.

    >>> two = np.zeros((30, 50), np.int32)
    >>> yy, xx = np.mgrid[:30, :50]
    >>> two[((yy - 15) ** 2 + (xx - 15) ** 2 < 100) | ((yy - 15) ** 2 + (xx - 32) ** 2 < 100)] = 1
    >>> int(split_touching(two).max())
    2
    """
    if labels.max() == 0:
        return labels
    distance = ndimage.distance_transform_edt(labels > 0)
    # Peaks over the whole field (3x faster than per object); an object that lost its only
    # peak to a neighbour's within min_distance, or whose maximum is a plateau, gets one
    # marker at its own maximum, so it stays (at least) one nucleus.
    peaks = feature.peak_local_max(distance, min_distance=min_distance, exclude_border=False)
    markers = np.zeros(labels.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    present[labels[tuple(peaks.T)]] = False
    unmarked = np.flatnonzero(present)
    boxes = ndimage.find_objects(labels)
    for k, label in enumerate(unmarked, start=len(peaks) + 1):
        box = boxes[label - 1]
        inside = np.where(labels[box] == label, distance[box], -1)
        y, x = np.unravel_index(np.argmax(inside), inside.shape)
        markers[box][y, x] = k
    return segmentation.watershed(-distance, markers, mask=labels > 0).astype(np.int32)


def nucleus_centres(labels: np.ndarray, *, max_area: int | None = None) -> pd.DataFrame:
    """One row per labelled nucleus: ``Metadata_ObjectNumber`` (1, 2, ... in label order),
    ``Location_Center_X/Y`` (pixels, CellProfiler's convention: x is the column) and the
    area; nuclei over ``max_area`` are left out."""
    rows = []
    for region in measure.regionprops(labels):
        if max_area is not None and region.area > max_area:
            continue
        cy, cx = region.centroid
        iy, ix = int(round(cy)), int(round(cx))
        inside = 0 <= iy < labels.shape[0] and 0 <= ix < labels.shape[1] \
            and labels[iy, ix] == region.label
        if not inside:  # a crescent's centroid: the nucleus's pixel nearest to it
            coords = region.coords
            nearest = coords[np.argmin(((coords - (cy, cx)) ** 2).sum(axis=1))]
            cy, cx = float(nearest[0]), float(nearest[1])
        rows.append((cx, cy, int(region.area)))
    table = pd.DataFrame(rows, columns=[CENTER_X, CENTER_Y, AREA])
    table.insert(0, OBJECT, np.arange(1, len(table) + 1))
    return table.astype({CENTER_X: float, CENTER_Y: float, AREA: np.int64})


def find_nuclei(nuclear: np.ndarray, settings: NucleusSettings = NucleusSettings()
                ) -> pd.DataFrame:
    """The nuclei of one field as centres (:func:`nucleus_centres`), touching ones split.

    >>> img = np.zeros((40, 60)); img[10:20, 10:20] = 1; img[20:30, 35:45] = 1
    >>> find_nuclei(img, NucleusSettings(smooth=1, min_area=20))[[CENTER_X, CENTER_Y]].round(1)
       Location_Center_X  Location_Center_Y
    0               14.5               14.5
    1               39.5               24.5
    """
    labels = label_nuclei(nuclear, smooth=settings.smooth, min_area=settings.min_area)
    return centres_of_objects(labels, settings)


def centres_of_objects(labels: np.ndarray, settings: NucleusSettings = NucleusSettings()
                       ) -> pd.DataFrame:
    """The nuclei of labelled objects (:func:`label_nuclei`'s) as centres, touching ones
    split and those over ``settings.max_area`` left out."""
    split = split_touching(labels, min_distance=settings.split_distance)
    return nucleus_centres(split, max_area=settings.max_area)
