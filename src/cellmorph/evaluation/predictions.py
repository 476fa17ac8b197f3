"""Scoring class predictions: median aggregation crop -> image -> well -> treatment (Kensert
et al. 2019), accuracy at a level, confusion matrices."""

from __future__ import annotations

import pandas as pd

from cellmorph import schema as sc


def aggregate_probabilities(crops: pd.DataFrame, level: str,
                            method: str = "median") -> pd.DataFrame:
    """Median (or mean) of probabilities up to ``level`` through each level below it.

    crop -> image (median over crops), image -> well (median over images),
    well -> treatment (median over wells); the prediction is the argmax at the end.
    Columns ``predicted`` and ``correct`` are added.
    """
    probs = sc.prob_columns(crops)
    df = crops
    for lvl in sc.LEVELS[: sc.LEVELS.index(level) + 1]:
        # A treatment is not a well: keys of finer levels are not carried up.
        finer = {k for f in sc.LEVELS[: sc.LEVELS.index(lvl)] for k in sc.LEVEL_KEYS[f]}
        metadata = [c for c in sc.PREDICTION_METADATA
                    if c not in finer or c in sc.LEVEL_KEYS[lvl]]
        df = sc.aggregate(df, sc.LEVEL_KEYS[lvl], method, values=probs, metadata=metadata,
                          count=False)
    df["predicted"] = sc.predicted_classes(df)
    df["correct"] = df["predicted"] == df[sc.MOA].astype(str)
    return df


def accuracy(crops: pd.DataFrame, level: str) -> float:
    """Fraction of ``level`` units whose aggregated prediction is the true class."""
    return float(aggregate_probabilities(crops, level)["correct"].mean())


def confusion(true: pd.Series, predicted: pd.Series) -> pd.DataFrame:
    """Counts of true MoA (rows) vs predicted MoA (columns), every label on both axes."""
    labels = sorted(set(true.astype(str)) | set(predicted.dropna().astype(str)))
    return pd.crosstab(true.astype(str), predicted.astype(str)).reindex(
        index=labels, columns=labels, fill_value=0)
