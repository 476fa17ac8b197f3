"""The classic nuclear-translocation readout, with no learning at all: a baseline for the deep
models on BBBC014-style screens.

Per field: nuclei are found by an Otsu threshold on the (smoothed) nuclear stain
(:func:`cellmorph.preprocess.nuclei.label_nuclei`; touching nuclei are not split), each
nucleus's cytoplasm is a ring around it (scikit-image's ``expand_labels``, minus the
nuclei), and each cell's ratio is its mean reporter intensity in the nucleus over the mean
in its ring. A field's value is the median over its cells. NF-kB in BBBC014 moves from the
cytoplasm (ratio near 1 or below) into the nucleus (ratio well above 1) with TNF-alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from skimage import measure, segmentation

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.imageio import read_image
from cellmorph.log import progress
from cellmorph.preprocess.nuclei import NucleusSettings, centres_of_objects, label_nuclei

RATIO = "Feature_NucCytoRatio"
RATIO_MEAN = "Feature_NucCytoRatioMean"
CELLS = sc.CELL_COUNT
# Nuclei with touching ones split (the single-cell detector's count, beside the readout's).
NUCLEI_FOUND = "Metadata_NucleiFound"


@dataclass(frozen=True)
class TranslocationSettings:
    """Which stains, and how cells are outlined."""

    nuclei: str = "DAPI"  # the stain that shows nuclei only
    reporter: str = "FITC"  # the stain whose location changes
    ring: int = 6  # cytoplasm ring width, pixels
    min_area: int = 50  # smallest nucleus, pixels
    smooth: float = 2.0  # Gaussian sigma before thresholding, pixels


def cell_ratios(reporter: np.ndarray, nuclei: np.ndarray,
                settings: TranslocationSettings = TranslocationSettings()) -> np.ndarray:
    """Nuclear / cytoplasmic mean reporter intensity of every cell of one field."""
    labels = label_nuclei(nuclei, smooth=settings.smooth, min_area=settings.min_area)
    return _ratios_of(reporter, labels, settings.ring)


def _ratios_of(reporter: np.ndarray, labels: np.ndarray, ring: int) -> np.ndarray:
    """The cell ratios of labelled nuclei, each cytoplasm a ring of ``ring`` pixels."""
    if labels.max() == 0:
        return np.zeros(0)
    rings = segmentation.expand_labels(labels, distance=ring)
    rings[labels > 0] = 0
    image = reporter.astype(np.float32)
    inner = measure.regionprops_table(labels, intensity_image=image,
                                      properties=("label", "intensity_mean"))
    outer = measure.regionprops_table(rings, intensity_image=image,
                                      properties=("label", "intensity_mean"))
    ring_mean = dict(zip(outer["label"], outer["intensity_mean"], strict=True))
    ratios = [m / ring_mean[label] for label, m in zip(inner["label"], inner["intensity_mean"],
                                                        strict=True)
              if ring_mean.get(label, 0) > 0]
    return np.asarray(ratios, dtype=float)


def field_readout(reporter: np.ndarray, nuclei: np.ndarray,
                  settings: TranslocationSettings = TranslocationSettings()) -> dict[str, float]:
    """Median and mean cell ratio of one field, how many cells they come from, and how many
    nuclei the single-cell detector finds in the same objects (touching ones split)."""
    labels = label_nuclei(nuclei, smooth=settings.smooth, min_area=settings.min_area)
    ratios = _ratios_of(reporter, labels, settings.ring)
    found = len(centres_of_objects(labels, NucleusSettings(smooth=settings.smooth,
                                                           min_area=settings.min_area)))
    if len(ratios) == 0:
        return {RATIO: np.nan, RATIO_MEAN: np.nan, CELLS: 0, NUCLEI_FOUND: found}
    return {RATIO: float(np.median(ratios)), RATIO_MEAN: float(ratios.mean()),
            CELLS: int(len(ratios)), NUCLEI_FOUND: found}


def translocation_fields(index: pd.DataFrame,
                         settings: TranslocationSettings = TranslocationSettings(), *,
                         progress_bar: bool = True) -> pd.DataFrame:
    """The readout of every field of an index: its metadata, the ratio, the cells it comes
    from, and the nuclei the single-cell detector finds (touching nuclei split)."""
    channels = sc.channels_of(index)
    nuclei, reporter = (sc.stain_named(channels, s) for s in (settings.nuclei,
                                                              settings.reporter))
    missing = [s for s, found in ((settings.nuclei, nuclei), (settings.reporter, reporter))
               if found is None]
    if missing:
        raise CellmorphError(f"translocation: the index has no stain {missing} (stains: "
                             f"{channels}); name them with --nuclei and --reporter")
    nuclei_col, reporter_col = sc.path_column(nuclei), sc.path_column(reporter)
    rows = []
    for _, row in progress(index.iterrows(), total=len(index), desc="translocation",
                           unit="field", enabled=progress_bar):
        values = field_readout(read_image(row[reporter_col]), read_image(row[nuclei_col]),
                               settings)
        rows.append({**{c: row[c] for c in sc.metadata_columns(index)}, **values})
    fields = pd.DataFrame(rows)
    empty = fields[CELLS] == 0
    if empty.all():
        raise CellmorphError("translocation: no nuclei found in any field; is "
                             f"{settings.nuclei!r} the nuclear stain?")
    return fields


def aggregate_fields(fields: pd.DataFrame, level: str = "well") -> pd.DataFrame:
    """Median field ratio per well (or treatment), fields without cells left out."""
    values = [RATIO, RATIO_MEAN]
    found = fields[fields[CELLS] > 0]
    counts = [c for c in (CELLS, NUCLEI_FOUND) if c in found.columns]
    return sc.aggregate(found, sc.LEVEL_KEYS[level], "median", values=values, sums=counts)

