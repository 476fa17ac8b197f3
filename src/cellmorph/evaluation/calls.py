"""Answers for the compounds nobody labelled (profiles route): each unlabelled treatment gets
the MoA of its nearest labelled treatment, a conformal set at each confidence calibrated on
the labelled compounds (the same kNN score and scheme the evaluation validates, so the set
is as trustworthy as the validity table says), a novelty verdict ("none of these" where the
set at the novelty confidence is empty) and its nearest labelled treatments.

The references are every labelled treatment (a query was never labelled, so nothing needs
holding out); controls are never called. The calibration scores are those of the NSC
evaluation: each labelled treatment scored against the other compounds, as a query is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.conformal import calibrate_by_group, knn_scores, schemes_used
from cellmorph.evaluation.knn import single_compound_moas

CALL, CALL_DISTANCE, NOVEL = "Call_MoA", "Call_Distance", "None_Of_These"
NEIGHBOURS = 3
TOO_FEW = ("calls for unlabelled compounds need two labelled MoAs with two compounds each to "
           "calibrate on")


def call_unknowns(labelled: pd.DataFrame, unknown: pd.DataFrame, *, metric: str = "cosine",
                  confidences: Sequence[float] = (0.8, 0.9, 0.95), scheme: str = "auto",
                  novelty_confidence: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """One row per unknown treatment: call, sets, novelty verdict, nearest references.

    ``labelled`` and ``unknown`` are treatment-level profiles (``Metadata_`` columns and the
    same features), normalised alike. MoAs with a single labelled compound cannot be
    calibrated (no other compound of theirs to score against) and are no candidates.
    """
    if unknown.empty:
        return pd.DataFrame()
    _check_names(labelled, unknown)
    lab = calibration_references(labelled)
    classes = sorted(lab[sc.MOA].astype(str).unique())
    if len(classes) < 2:
        raise CellmorphError(TOO_FEW)
    table = pd.concat([lab, unknown], ignore_index=True)
    labels = np.array([classes.index(str(m)) for m in lab[sc.MOA]] + [-1] * len(unknown))
    compounds = table[sc.COMPOUND].astype(str).to_numpy()
    scores = knn_scores(sc.to_matrix(table), labels, compounds, len(classes), metric=metric)
    calibrated = calibrate_by_group(scores, labels, compounds, len(classes), seed)
    queries = labels < 0
    used = schemes_used(scheme, [*confidences, novelty_confidence],
                        dict(zip(classes, map(int, calibrated.sizes), strict=True)))
    out = unknown[[c for c in (sc.TREATMENT, sc.COMPOUND, sc.CONCENTRATION)
                   if c in unknown.columns]].reset_index(drop=True)
    distances = cdist(sc.to_matrix(unknown), sc.to_matrix(lab), metric=metric)
    nearest = np.argsort(distances, axis=1, kind="stable")
    out[CALL] = lab[sc.MOA].astype(str).to_numpy()[nearest[:, 0]]
    out[CALL_DISTANCE] = distances[np.arange(len(out)), nearest[:, 0]]
    for conf in (*confidences, novelty_confidence):
        p = (calibrated.mondrian if used[conf] == "mondrian" else calibrated.marginal)[queries]
        members = p > 1 - conf
        out[f"Set_{round(conf * 100):d}"] = ["; ".join(np.asarray(classes)[r]) for r in members]
    out[NOVEL] = out[f"Set_{round(novelty_confidence * 100):d}"] == ""
    for k in range(min(NEIGHBOURS, len(lab))):
        ref = lab.iloc[nearest[:, k]]
        out[f"Neighbour_{k + 1}"] = ref[sc.TREATMENT].to_numpy()
        out[f"Neighbour_{k + 1}_MoA"] = ref[sc.MOA].astype(str).to_numpy()
        out[f"Neighbour_{k + 1}_Distance"] = distances[np.arange(len(out)), nearest[:, k]]
    return out


def calibration_references(labelled: pd.DataFrame) -> pd.DataFrame:
    """The labelled treatments a call can be calibrated on: those of MoAs with two
    compounds or more."""
    return labelled[~labelled[sc.MOA].isin(single_compound_moas(labelled))].reset_index(
        drop=True)


def _check_names(labelled: pd.DataFrame, unknown: pd.DataFrame) -> None:
    """An unknown compound that is labelled elsewhere is a plate-map slip, not a query."""
    both = sorted(set(labelled[sc.COMPOUND].astype(str)) & set(unknown[sc.COMPOUND].astype(str)))
    if both:
        raise CellmorphError(f"compound {both[0]!r} is labelled in some wells and unlabelled in "
                             "others; give it its label everywhere, or another name where it "
                             "is a different compound")
