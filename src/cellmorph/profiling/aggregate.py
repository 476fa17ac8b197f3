"""Aggregation of profiles (tile -> image -> well -> treatment), pycytominer's call shape."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cellmorph.datasets import index as ix
from cellmorph.errors import CellmorphError

WELL_KEYS = [ix.PLATE, ix.WELL]
IMAGE_KEYS = [ix.PLATE, ix.WELL, ix.SITE]
TREATMENT_KEYS = [ix.TREATMENT]


def feature_columns(profiles: pd.DataFrame) -> list[str]:
    """Feature columns: everything not starting with ``Metadata_``; all must be numeric."""
    feats = [c for c in profiles.columns if not str(c).startswith("Metadata_")]
    if not feats:
        raise CellmorphError("profile table has no feature columns (every column starts with "
                             "Metadata_)")
    if not metadata_columns(profiles):
        raise CellmorphError("profile table has no Metadata_ columns; name annotation columns "
                             "Metadata_Plate, Metadata_Well, ... as pycytominer does")
    bad = [c for c in feats if not pd.api.types.is_numeric_dtype(profiles[c])]
    if bad:
        raise CellmorphError(f"profile table: non-numeric feature columns {bad[:5]}; prefix "
                             "annotation columns with Metadata_ or drop them")
    return feats


def metadata_columns(profiles: pd.DataFrame) -> list[str]:
    """The ``Metadata_`` columns of a profile table."""
    return [c for c in profiles.columns if str(c).startswith("Metadata_")]


def aggregate(profiles: pd.DataFrame, by: Sequence[str], method: str = "mean") -> pd.DataFrame:
    """Mean or median of the features within groups of ``by``.

    Metadata columns that are constant within every group are kept; for a treatment that
    spans batches, ``Metadata_Batch`` keeps the most frequent one.
    """
    if method not in ("mean", "median"):
        raise CellmorphError(f"aggregation method {method!r}: use mean or median")
    feats = feature_columns(profiles)
    by = list(by)
    grouped = profiles.groupby(by, sort=True, dropna=False)
    values = grouped[feats].agg(method)
    meta = [c for c in metadata_columns(profiles) if c not in by]
    keep = []
    if meta:
        nunique = grouped[meta].nunique(dropna=False).max()
        keep = [c for c in meta if nunique[c] <= 1]
    out = grouped[keep].first() if keep else pd.DataFrame(index=values.index)
    if ix.BATCH in meta and ix.BATCH not in keep:
        out = out.assign(**{ix.BATCH: grouped[ix.BATCH].agg(lambda s: s.mode().iloc[0])})
    out = out.assign(Metadata_Count=grouped.size())
    return pd.concat([out, values], axis=1).reset_index()


def to_matrix(profiles: pd.DataFrame) -> np.ndarray:
    """The feature matrix (float64) of a profile table."""
    return profiles[feature_columns(profiles)].to_numpy(np.float64)
