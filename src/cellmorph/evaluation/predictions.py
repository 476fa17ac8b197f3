"""Scoring class predictions: median aggregation crop -> image -> well -> treatment (Kensert
et al. 2019), accuracy at a level, confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cellmorph import schema as sc


def aggregate_probabilities(crops: pd.DataFrame, level: str,
                            method: str = "median") -> pd.DataFrame:
    """Median (or mean) of probabilities up to ``level`` through each level below it.

    crop -> image (median over crops), image -> well (median over images),
    well -> treatment (median over wells); the prediction is the argmax at the end.
    Columns ``predicted`` and ``correct`` are added.

    Per-class medians of distributions are not a distribution (three wells voting for three
    different MoAs give medians near 0 for every MoA), so the returned ``Prob_`` columns are
    those medians divided by their row sum: a distribution on every row, with the same argmax
    (a row whose medians are all 0 gets the uniform distribution). The medians of the
    levels in between are taken on the raw medians, as Kensert et al. aggregate.

    Examples
    --------
    >>> import pandas as pd
    >>> crops = pd.DataFrame({"Metadata_Plate": "P", "Metadata_Well": ["A01", "A02", "A03"],
    ...     "Metadata_Site": 1, "Metadata_Compound": "c", "Metadata_Concentration": 1.0,
    ...     "Metadata_Treatment": "c@1", "Metadata_MoA": "a",
    ...     "Prob_a": [0.6, 0.5, 0.1], "Prob_b": [0.4, 0.1, 0.3], "Prob_c": [0.0, 0.4, 0.6]})
    >>> treatment = aggregate_probabilities(crops, "treatment")
    >>> treatment[["Prob_a", "Prob_b", "Prob_c"]].round(2).values.tolist()  # medians .5 .3 .4
    [[0.42, 0.25, 0.33]]
    >>> treatment["predicted"].tolist()
    ['a']
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
    df[probs] = _renormalised(df[probs].to_numpy(float))
    df["predicted"] = sc.predicted_classes(df)
    df["correct"] = df["predicted"] == df[sc.MOA].astype(str)
    return df


def _renormalised(medians: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; an all-zero row becomes uniform."""
    sums = medians.sum(axis=1, keepdims=True)
    uniform = np.full_like(medians, 1.0 / max(medians.shape[1], 1))
    return np.where(sums > 0, medians / np.where(sums > 0, sums, 1.0), uniform)


def combine_models(tables: Sequence[pd.DataFrame], method: str = "median") -> pd.DataFrame:
    """Treatment tables of the same units from several models (the folds of a run, or its
    seeds) as one: the per-class median (or mean) over the models, renormalised.

    Units absent from some table are combined over the tables that hold them.

    Examples
    --------
    >>> import pandas as pd
    >>> one = pd.DataFrame({"Metadata_Treatment": ["u"], "Prob_a": [0.6], "Prob_b": [0.4]})
    >>> two, three = one.assign(Prob_a=0.2, Prob_b=0.8), one.assign(Prob_a=0.7, Prob_b=0.3)
    >>> combine_models([one, two, three])[["Prob_a", "Prob_b"]].round(2).values.tolist()
    [[0.6, 0.4]]
    """
    probs = sc.prob_columns(tables[0])
    stacked = pd.concat(tables, ignore_index=True)
    metadata = [c for c in sc.metadata_columns(stacked) if c != sc.FOLD]
    keys = [sc.TREATMENT]
    df = sc.aggregate(stacked, keys, method, values=probs,
                      metadata=[c for c in metadata if c not in keys], count=False)
    df[probs] = _renormalised(df[probs].to_numpy(float))
    df["predicted"] = sc.predicted_classes(df)
    return df.reset_index(drop=True)


def accuracy(crops: pd.DataFrame, level: str) -> float:
    """Fraction of ``level`` units whose aggregated prediction is the true class."""
    return float(aggregate_probabilities(crops, level)["correct"].mean())


def confusion(true: pd.Series, predicted: pd.Series) -> pd.DataFrame:
    """Counts of true MoA (rows) vs predicted MoA (columns), every label on both axes."""
    labels = sorted(set(true.astype(str)) | set(predicted.dropna().astype(str)))
    return pd.crosstab(true.astype(str), predicted.astype(str)).reindex(
        index=labels, columns=labels, fill_value=0)
