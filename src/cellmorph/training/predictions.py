"""Aggregation of crop softmax outputs: median crop -> image -> well -> treatment (Kensert)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellmorph.datasets import index as ix

PROB_PREFIX = "Prob_"
LEVELS = {"image": [ix.PLATE, ix.WELL, ix.SITE], "well": [ix.PLATE, ix.WELL],
          "treatment": [ix.TREATMENT]}


def prob_columns(df: pd.DataFrame) -> list[str]:
    """The class-probability columns of a prediction table."""
    return [c for c in df.columns if c.startswith(PROB_PREFIX)]


def classes_of(df: pd.DataFrame) -> list[str]:
    """Class names, in the order of the probability columns."""
    return [c[len(PROB_PREFIX) :] for c in prob_columns(df)]


def aggregate_probabilities(crops: pd.DataFrame, level: str,
                            method: str = "median") -> pd.DataFrame:
    """Median (or mean) of probabilities up to ``level`` through each level below it.

    crop -> image (median over crops), image -> well (median over images),
    well -> treatment (median over wells); the prediction is the argmax at the end.
    """
    order = ["image", "well", "treatment"]
    probs = prob_columns(crops)
    df = crops
    for lvl in order[: order.index(level) + 1]:
        keys = LEVELS[lvl]
        meta = [c for c in (ix.TREATMENT, ix.COMPOUND, ix.CONCENTRATION, ix.MOA, ix.PLATE,
                            ix.WELL, ix.BATCH, "Metadata_Fold")
                if c in df.columns and c not in keys]
        grouped = df.groupby(keys, sort=True)
        agg = grouped[probs].agg(method)
        firsts = grouped[meta].first() if meta else None
        df = (pd.concat([firsts, agg], axis=1) if firsts is not None else agg).reset_index()
        if lvl == "treatment":
            df = df.drop(columns=[c for c in (ix.PLATE, ix.WELL) if c in df.columns])
    classes = classes_of(df)
    df["predicted"] = np.asarray(classes)[df[probs].to_numpy().argmax(axis=1)]
    df["correct"] = df["predicted"] == df[ix.MOA].astype(str)
    return df


def accuracy(crops: pd.DataFrame, level: str) -> float:
    """Fraction of ``level`` units whose aggregated prediction is the true class."""
    return float(aggregate_probabilities(crops, level)["correct"].mean())
