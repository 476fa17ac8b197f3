"""Novelty: does a conformal set say "none of these" for a mechanism it has never seen?

Leave-one-MoA-out on treatment profiles: each MoA in turn is removed from the references and
from the calibration; its treatments are then scored against the known MoAs only (kNN under
NSC, as :func:`cellmorph.evaluation.conformal.conformal_from_profiles` scores them), while
every known treatment is scored as usual, calibrated leave-one-compound-out. A held-out
treatment should get an empty set at the confidence asked (detection), a known one should
not (false alarm); the novelty score, one minus the largest p-value, ranks them (AUROC).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.conformal import calibrate_by_group, knn_scores, schemes_used
from cellmorph.evaluation.knn import single_compound_moas

NOVELTY_COLUMNS = ["held_out_moa", "n_novel", "n_known", "confidence", "scheme",
                   "detection_rate", "false_alarm_rate", "auroc"]


def novelty_scores(treatments: pd.DataFrame, held_out: str, *, metric: str = "cosine",
                   confidence: float = 0.9, scheme: str = "auto",
                   seed: int = 0) -> tuple[pd.DataFrame, str]:
    """Per treatment with ``held_out`` removed from references and calibration: whether it
    is of that MoA, its novelty score and whether its set is empty; and the scheme used."""
    lab = _usable(treatments)
    novel = (lab[sc.MOA].astype(str) == held_out).to_numpy()
    known = sorted(set(lab[sc.MOA].astype(str)) - {held_out})
    labels = np.array([known.index(m) if not n else -1
                       for m, n in zip(lab[sc.MOA].astype(str), novel, strict=True)])
    compounds = lab[sc.COMPOUND].astype(str).to_numpy()
    scores = knn_scores(sc.to_matrix(lab), labels, compounds, len(known), metric=metric)
    calibrated = calibrate_by_group(scores, labels, compounds, len(known), seed)
    sizes = {c: int(n) for c, n in zip(known, calibrated.sizes, strict=True)}
    used = schemes_used(scheme, [confidence], sizes)[confidence]
    p = calibrated.mondrian if used == "mondrian" else calibrated.marginal
    table = lab[[sc.TREATMENT, sc.COMPOUND, sc.MOA]].assign(
        novel=novel, novelty_score=1 - p.max(axis=1), empty_set=(p <= 1 - confidence).all(1))
    return table, used


def leave_one_moa_out(treatments: pd.DataFrame, *, metric: str = "cosine",
                      confidence: float = 0.9, scheme: str = "auto",
                      seed: int = 0) -> pd.DataFrame:
    """One row per held-out MoA: detection and false-alarm rates of empty sets at
    ``confidence``, and the AUROC of the novelty score (held-out vs known treatments)."""
    lab = _usable(treatments)
    moas = sorted(lab[sc.MOA].astype(str).unique())
    if len(moas) < 3:
        raise CellmorphError("novelty (leave-one-MoA-out) needs three MoAs with two compounds "
                             "each: two stay known while one is held out")
    rows = []
    for moa in moas:
        table, used = novelty_scores(lab, moa, metric=metric, confidence=confidence,
                                     scheme=scheme, seed=seed)
        novel = table["novel"].to_numpy()
        rows.append({"held_out_moa": moa, "n_novel": int(novel.sum()),
                     "n_known": int((~novel).sum()), "confidence": confidence, "scheme": used,
                     "detection_rate": float(table["empty_set"][novel].mean()),
                     "false_alarm_rate": float(table["empty_set"][~novel].mean()),
                     "auroc": float(roc_auc_score(novel, table["novelty_score"]))})
    return pd.DataFrame(rows, columns=NOVELTY_COLUMNS)


def _usable(treatments: pd.DataFrame) -> pd.DataFrame:
    """Labelled treatments of MoAs with two compounds or more (the others cannot be matched
    under NSC, as in 1-NN evaluation)."""
    lab = sc.treatments(treatments)
    return lab[~lab[sc.MOA].isin(single_compound_moas(lab))].reset_index(drop=True)


def summarize_novelty(table: pd.DataFrame) -> dict:
    """Means over the held-out MoAs (for metrics.json and the terminal), and each MoA's."""
    return {"confidence": float(table["confidence"].iloc[0]),
            "mean_auroc": float(table["auroc"].mean()),
            "min_auroc": float(table["auroc"].min()), "max_auroc": float(table["auroc"].max()),
            "detection_rate": float(table["detection_rate"].mean()),
            "false_alarm_rate": float(table["false_alarm_rate"].mean()),
            "per_moa": {r.held_out_moa: round(r.auroc, 4) for r in table.itertuples()}}


def format_novelty(summary: dict) -> str:
    """One line: how well unseen mechanisms stand out."""
    return (f"novelty (leave-one-MoA-out, {summary['confidence']:.0%} sets): AUROC "
            f"{summary['mean_auroc']:.3f} ({summary['min_auroc']:.2f}-{summary['max_auroc']:.2f} "
            f"over held-out MoAs); 'none of these' for {summary['detection_rate']:.0%} of unseen "
            f"treatments, {summary['false_alarm_rate']:.1%} of known ones")
