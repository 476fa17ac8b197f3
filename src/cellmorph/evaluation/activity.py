"""What profiles say without MoA labels: how far each well sits from the controls, and how a
compound's profile moves with its dose. Both need only what any screen has (a dose series,
and for the first, control wells), so `evaluate` gives an answer for a screen too small or
too unlabelled for MoA accuracy.

Distances are scipy's (``cdist``); the trend is scipy's Spearman correlation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist
from scipy.stats import spearmanr

from cellmorph import schema as sc

DISTANCE_TO_CONTROLS = "distance_to_controls"
DISTANCE_TO_LOWEST = "distance_to_lowest_dose"
DOSE_TREND = "dose_trend_spearman"


def distance_to_controls(wells: pd.DataFrame, *, controls_too: bool = False) -> pd.DataFrame:
    """Each treated well's root-mean-square difference from the mean control profile of its
    plate (of all controls, where its plate has none), per feature: a per-well activity
    score, 0 for a well that looks like the controls and, on profiles normalised against the
    controls, in units of their spread. Euclidean, not cosine: after normalisation the
    controls' mean is the origin, which has no direction. Empty without control wells.
    ``controls_too``: the control wells' own distances as well (their spread: what a plate
    view and Z' compare the treated wells with).

    Examples
    --------
    >>> wells = pd.DataFrame({"Metadata_Plate": "P", "Metadata_Well": ["A01", "A02", "B01"],
    ...     "Metadata_Role": ["control", "control", "unlabelled"],
    ...     "Metadata_Treatment": ["DMSO@0", "DMSO@0", "x@1"],
    ...     "Feature_a": [1.0, -1.0, 3.0], "Feature_b": [0.0, 0.0, 4.0]})
    >>> distance_to_controls(wells)["distance_to_controls"].round(3).tolist()  # |(3, 4)|/sqrt 2
    [3.536]
    """
    controls = wells[sc.is_control(wells)]
    treated = wells if controls_too else wells[~sc.is_control(wells)]
    if controls.empty or treated.empty:
        return pd.DataFrame(columns=[*sc.metadata_columns(wells), DISTANCE_TO_CONTROLS])
    feats = sc.feature_columns(wells)
    overall = controls[feats].to_numpy(np.float64).mean(axis=0)
    by_plate = {p: g[feats].to_numpy(np.float64).mean(axis=0)
                for p, g in controls.groupby(sc.PLATE)}
    centres = np.stack([by_plate.get(p, overall) for p in treated[sc.PLATE]])
    difference = treated[feats].to_numpy(np.float64) - centres
    distance = np.sqrt((difference ** 2).mean(axis=1))
    return treated[sc.metadata_columns(treated)].assign(
        **{DISTANCE_TO_CONTROLS: distance}).reset_index(drop=True)


def dose_comparison(wells: pd.DataFrame, *, metric: str = "cosine") -> pd.DataFrame:
    """For each compound given at two or more concentrations: each concentration's profile
    (the mean of its wells) and its distance to the compound's lowest concentration, and
    the dose trend, Spearman's rho of that distance against the concentration (three or more
    concentrations; NaN with two). Controls are left out. Empty when no compound has a
    dose series.

    Examples
    --------
    >>> wells = pd.DataFrame({"Metadata_Role": "unlabelled", "Metadata_Compound": "x",
    ...     "Metadata_Concentration": [0.1, 1.0, 10.0],
    ...     "Metadata_Treatment": ["x@0.1", "x@1", "x@10"],
    ...     "Feature_a": [1.0, 1.0, 0.0], "Feature_b": [0.0, 0.5, 1.0]})
    >>> dose_comparison(wells)[["distance_to_lowest_dose", "dose_trend_spearman"]].round(3)
       distance_to_lowest_dose  dose_trend_spearman
    0                    0.000                  1.0
    1                    0.106                  1.0
    2                    1.000                  1.0
    """
    treated = wells[~sc.is_control(wells)]
    columns = [sc.COMPOUND, sc.CONCENTRATION, sc.TREATMENT, DISTANCE_TO_LOWEST, DOSE_TREND]
    if treated.empty or sc.CONCENTRATION not in treated.columns:
        return pd.DataFrame(columns=columns)
    profiles = sc.aggregate(treated, sc.TREATMENT_KEYS, "mean",
                            metadata=[sc.TREATMENT, sc.COMPOUND, sc.CONCENTRATION])
    feats = sc.feature_columns(profiles)
    rows = []
    for _, doses in profiles.groupby(sc.COMPOUND, sort=True):
        if doses[sc.CONCENTRATION].nunique() < 2:
            continue
        doses = doses.sort_values(sc.CONCENTRATION)
        values = doses[feats].to_numpy(np.float64)
        distance = cdist(values, values[:1], metric=metric)[:, 0]
        trend = (float(spearmanr(doses[sc.CONCENTRATION], distance).statistic)
                 if len(doses) >= 3 else np.nan)
        rows.append(doses[[sc.COMPOUND, sc.CONCENTRATION, sc.TREATMENT]].assign(
            **{DISTANCE_TO_LOWEST: distance, DOSE_TREND: trend}))
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.concat(rows, ignore_index=True)[columns]
