"""The package-wide table schema: column names, roles, aggregation levels and their helpers.

Every table cellmorph reads or writes follows pycytominer's convention: ``Metadata_*`` columns
for annotations plus value columns (``Feature_*`` in profiles, ``Prob_<class>`` in
predictions). An *index* has one row per field of view and one ``Path_<stain>`` column per
channel.

Aggregation levels and what ``Metadata_Count`` counts at each:

========== ============================== =================================================
level      keys                           ``Metadata_Count`` (profiles)
========== ============================== =================================================
image      plate, well, site              kept tiles of the field of view
well       plate, well                    images (fields) of the well that have a profile
treatment  treatment (compound@conc.)     wells of the treatment
========== ============================== =================================================

Metadata columns survive an aggregation when they are constant within every group (for
example ``Metadata_Compound`` at well and treatment level, ``Metadata_Site`` only at image
level); ``Metadata_Batch`` of a treatment that spans batches is its most frequent batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cellmorph.errors import CellmorphError

PLATE = "Metadata_Plate"
WELL = "Metadata_Well"
SITE = "Metadata_Site"
BATCH = "Metadata_Batch"
REPLICATE = "Metadata_Replicate"
COMPOUND = "Metadata_Compound"
CONCENTRATION = "Metadata_Concentration"
MOA = "Metadata_MoA"
TREATMENT = "Metadata_Treatment"
ROLE = "Metadata_Role"
COUNT = "Metadata_Count"
FOLD = "Metadata_Fold"
CELL_LINE = "Metadata_CellLine"
SYNTHETIC = "Metadata_Synthetic"  # True on every row made from SYNTHETIC images
# Single cells: CellProfiler's object number and nucleus centre (pixels, x = column), and
# the nuclei found in a field (or in the fields of a well).
OBJECT_NUMBER = "Metadata_ObjectNumber"
CELL_X = "Metadata_Location_Center_X"
CELL_Y = "Metadata_Location_Center_Y"
CELL_COUNT = "Metadata_CellCount"
# CellProfiler's own names of the centre (in its object tables, where every column is a
# measurement); cellmorph's tables carry them with the Metadata_ prefix, since every other
# column of a profile is a feature.
CP_CENTER_X = "Location_Center_X"
CP_CENTER_Y = "Location_Center_Y"
METADATA_PREFIX = "Metadata_"
PATH_PREFIX = "Path_"
PROB_PREFIX = "Prob_"

ROLE_TREATMENT = "treatment"  # treated and labelled: evaluated
ROLE_CONTROL = "control"  # negative control (DMSO): used for normalisation only
ROLE_UNLABELLED = "unlabelled"  # treated, no label: profiled and predicted, never scored
ROLES = (ROLE_TREATMENT, ROLE_CONTROL, ROLE_UNLABELLED)

KEY_COLUMNS = [PLATE, WELL, SITE]
METADATA_COLUMNS = [PLATE, BATCH, WELL, SITE, REPLICATE, COMPOUND, CONCENTRATION, MOA, TREATMENT,
                    ROLE]

# Aggregation levels, from the finest to the coarsest.
IMAGE_KEYS = [PLATE, WELL, SITE]
WELL_KEYS = [PLATE, WELL]
TREATMENT_KEYS = [TREATMENT]
LEVEL_KEYS: dict[str, list[str]] = {"image": IMAGE_KEYS, "well": WELL_KEYS,
                                    "treatment": TREATMENT_KEYS}
LEVELS = tuple(LEVEL_KEYS)

# The metadata a prediction table carries up the levels (when constant within a group).
PREDICTION_METADATA = [TREATMENT, COMPOUND, CONCENTRATION, MOA, PLATE, WELL, BATCH, FOLD,
                       SYNTHETIC]


def path_column(channel: str) -> str:
    """The index column holding the image file of ``channel``."""
    return f"{PATH_PREFIX}{channel}"


def stain_named(channels: Sequence[str], name: str) -> str | None:
    """The stain of ``channels`` called ``name``, whatever its case (None when absent).

    >>> stain_named(["DAPI", "Tubulin"], "dapi")
    'DAPI'
    """
    return next((c for c in channels if c.lower() == name.lower()), None)


def channels_of(index: pd.DataFrame) -> list[str]:
    """The stains of an index, in column order."""
    return [c[len(PATH_PREFIX):] for c in index.columns if c.startswith(PATH_PREFIX)]


def metadata_mask(table: pd.DataFrame) -> list[bool]:
    """For each column: does it hold metadata (``Metadata_*``)?"""
    return [str(c).startswith(METADATA_PREFIX) for c in table.columns]


def metadata_columns(table: pd.DataFrame) -> list[str]:
    """The ``Metadata_`` columns of a table."""
    return [c for c in table.columns if str(c).startswith(METADATA_PREFIX)]


def feature_columns(profiles: pd.DataFrame) -> list[str]:
    """Feature columns: everything not starting with ``Metadata_``; all must be numeric."""
    feats = [c for c in profiles.columns if not str(c).startswith(METADATA_PREFIX)]
    if not feats:
        raise CellmorphError("profile table has no feature columns (every column starts with "
                             "Metadata_)")
    if not metadata_columns(profiles):
        raise CellmorphError("profile table has no Metadata_ columns; name annotation columns "
                             "Metadata_Plate, Metadata_Well, ... as pycytominer does")
    # One dtype lookup: indexing thousands of columns one by one is slow.
    dtypes = profiles.dtypes
    bad = [c for c, t, meta in zip(profiles.columns, dtypes, metadata_mask(profiles), strict=True)
           if not meta and not pd.api.types.is_numeric_dtype(t)]
    if bad:
        raise CellmorphError(f"profile table: non-numeric feature columns {bad[:5]}; prefix "
                             "annotation columns with Metadata_ or drop them")
    return feats


def to_matrix(profiles: pd.DataFrame) -> np.ndarray:
    """The feature matrix (float64) of a profile table."""
    return profiles[feature_columns(profiles)].to_numpy(np.float64)


def prob_columns(predictions: pd.DataFrame) -> list[str]:
    """The class-probability columns of a prediction table."""
    return [c for c in predictions.columns if str(c).startswith(PROB_PREFIX)]


def classes_of(predictions: pd.DataFrame) -> list[str]:
    """Class names, in the order of the probability columns."""
    return [c[len(PROB_PREFIX):] for c in prob_columns(predictions)]


def predicted_classes(predictions: pd.DataFrame) -> np.ndarray:
    """The most probable class of every row (the argmax of its probability columns)."""
    probs = predictions[prob_columns(predictions)].to_numpy(float)
    return np.asarray(classes_of(predictions))[probs.argmax(axis=1)]


def is_synthetic(table: pd.DataFrame | None) -> bool:
    """True when a table was made from SYNTHETIC images (its figures must say so)."""
    return table is not None and SYNTHETIC in table.columns and bool(table[SYNTHETIC].any())


def is_treatment(table: pd.DataFrame) -> pd.Series:
    """Mask of labelled treatment rows (what is trained on and scored)."""
    return table[ROLE] == ROLE_TREATMENT


def is_control(table: pd.DataFrame) -> pd.Series:
    """Mask of negative-control rows (used for normalisation only)."""
    return table[ROLE] == ROLE_CONTROL


def treatments(table: pd.DataFrame) -> pd.DataFrame:
    """The labelled treatment rows of a table."""
    return table[is_treatment(table)]


def controls(table: pd.DataFrame) -> pd.DataFrame:
    """The negative-control rows of a table."""
    return table[is_control(table)]


def aggregate(table: pd.DataFrame, by: Sequence[str], method: str = "mean", *,
              values: Sequence[str] | None = None, metadata: Sequence[str] | None = None,
              count: bool = True, sums: Sequence[str] = ()) -> pd.DataFrame:
    """Mean or median of value columns within groups of ``by`` (pycytominer's call shape).

    ``values`` defaults to the feature columns. Metadata columns (``metadata``, default every
    ``Metadata_`` column, in that order) are kept when constant within every group;
    ``Metadata_Batch`` of a group that spans batches is its most frequent batch. With
    ``count``, ``Metadata_Count`` says how many rows each group aggregated; the ``sums``
    columns (counts such as ``Metadata_CellCount``) are totalled within each group and
    follow it.
    """
    if method not in ("mean", "median"):
        raise CellmorphError(f"aggregation method {method!r}: use mean or median")
    values = list(values) if values is not None else feature_columns(table)
    by = list(by)
    grouped = table.groupby(by, sort=True, dropna=False)
    aggregated = grouped[values].agg(method)
    candidates = metadata if metadata is not None else metadata_columns(table)
    meta = [c for c in candidates if c in table.columns and c not in by and c not in sums]
    keep = []
    if meta:
        nunique = grouped[meta].nunique(dropna=False).max()
        keep = [c for c in meta if nunique[c] <= 1]
    out = grouped[keep].first() if keep else pd.DataFrame(index=aggregated.index)
    if BATCH in meta and BATCH not in keep:
        out = out.assign(**{BATCH: grouped[BATCH].agg(lambda s: s.mode().iloc[0])})
    if count:
        out = out.assign(**{COUNT: grouped.size()})
    if sums:
        out = pd.concat([out, grouped[list(sums)].sum()], axis=1)
    # One block before the keys go back in as columns: inserting into a frame of many
    # per-dtype blocks is what pandas warns about (PerformanceWarning).
    return pd.concat([out, aggregated], axis=1).copy().reset_index()
