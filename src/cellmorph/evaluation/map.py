"""mAP via copairs: phenotypic activity (vs DMSO) and MoA consistency (Kalinin et al. 2025).

Both follow copairs' own recipes; nothing here re-implements average precision.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from copairs.map import average_precision, mean_average_precision
from copairs.matching import assign_reference_index

from cellmorph import schema as sc
from cellmorph.schema import feature_columns

REFERENCE = "Metadata_Reference_Index"


def phenotypic_activity(wells: pd.DataFrame, *, null_size: int = 10000, threshold: float = 0.05,
                        seed: int = 0, distance: str = "cosine",
                        by: str = sc.TREATMENT) -> pd.DataFrame:
    """mAP of each treatment's (``by``: or compound's) replicate wells retrieved against the
    DMSO wells; labelled or not (activity needs no MoA)."""
    df = wells.reset_index(drop=True)
    df = assign_reference_index(df, df.index[df[sc.ROLE] == sc.ROLE_CONTROL],
                                reference_col=REFERENCE, default_value=-1)
    meta, feats = _split(df)
    ap = average_precision(meta, feats, pos_sameby=[by, REFERENCE], pos_diffby=[],
                           neg_sameby=[], neg_diffby=[by, REFERENCE],
                           distance=distance, progress_bar=False)
    ap = ap[ap[REFERENCE] == -1].dropna(subset=["average_precision"])
    return mean_average_precision(ap, [by], null_size=null_size, threshold=threshold,
                                  seed=seed, progress_bar=False)


def moa_consistency(treatments: pd.DataFrame, *, null_size: int = 10000, threshold: float = 0.05,
                    seed: int = 0, distance: str = "cosine") -> pd.DataFrame:
    """mAP of each MoA: same-MoA treatments of *other* compounds retrieved first."""
    df = sc.treatments(treatments).reset_index(drop=True)
    meta, feats = _split(df)
    ap = average_precision(meta, feats, pos_sameby=[sc.MOA], pos_diffby=[sc.COMPOUND],
                           neg_sameby=[], neg_diffby=[sc.MOA], distance=distance,
                           progress_bar=False)
    ap = ap.dropna(subset=["average_precision"])
    return mean_average_precision(ap, [sc.MOA], null_size=null_size, threshold=threshold,
                                  seed=seed, progress_bar=False)


def summarize_map(scores: pd.DataFrame) -> dict:
    """Mean mAP and the fraction retrieved (corrected p below the threshold)."""
    return {"mean_map": float(scores["mean_average_precision"].mean()),
            "fraction_retrieved": float(scores["below_corrected_p"].mean()),
            "n": int(len(scores))}


def _split(df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    feats = feature_columns(df)
    meta = df[[c for c in df.columns if c not in feats]].reset_index(drop=True)
    return meta, df[feats].to_numpy(np.float64)
