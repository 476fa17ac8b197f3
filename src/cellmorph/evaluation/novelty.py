"""Novelty: does a conformal set say "none of these" for a mechanism it has never seen?

Leave-one-MoA-out: each MoA in turn is removed from the references and from the
calibration; its treatments are then scored against the known MoAs only, while every known
treatment is scored as usual, calibrated leave-one-compound-out. A held-out treatment should
get an empty set at the confidence asked (detection), a known one should not (false alarm);
the novelty score, one minus the largest p-value, ranks them (AUROC). The calls of unlabelled
compounds (:mod:`cellmorph.evaluation.calls`) say "none of these" where the set is empty or
the treatment is atypical of the known ones (its distance to the nearest known treatment, or
one minus its top probability, against theirs); ``none_of_these_rate`` and
``none_of_these_false_alarm_rate`` measure that rule the same way.

Two sources of scores, one table:

- profiles (:func:`leave_one_moa_out`): kNN under NSC, as
  :func:`cellmorph.evaluation.conformal.conformal_from_profiles` scores them, with the
  held-out MoA's treatments removed from the references;
- fine-tuning (:func:`novelty_from_probabilities`): the known treatments' out-of-fold
  (leave-one-compound-out) probabilities, and the held-out MoA's treatments' probabilities
  from a model trained without that MoA (a leave-one-MoA-out fold); both renormalised over
  the known MoAs, scored by crepes' hinge score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from crepes.extras import hinge
from sklearn.metrics import roc_auc_score

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.calls import typicality
from cellmorph.evaluation.conformal import (
    calibrate_by_group,
    knn_scores,
    other_compound_distances,
    schemes_used,
)
from cellmorph.evaluation.knn import single_compound_moas

NOVELTY_COLUMNS = ["held_out_moa", "n_novel", "n_known", "confidence", "scheme",
                   "detection_rate", "false_alarm_rate", "auroc", "none_of_these_rate",
                   "none_of_these_false_alarm_rate"]


def novelty_scores(treatments: pd.DataFrame, held_out: str, *, metric: str = "cosine",
                   confidence: float = 0.9, scheme: str = "auto",
                   seed: int = 0) -> tuple[pd.DataFrame, str]:
    """Per treatment with ``held_out`` removed from references and calibration: whether it
    is of that MoA, its novelty score and whether its set is empty; and the scheme used."""
    lab = _usable(treatments)
    novel = (lab[sc.MOA].astype(str) == held_out).to_numpy()
    known = sorted(set(lab[sc.MOA].astype(str)) - {held_out})
    labels = _known_labels(lab, novel, known)
    compounds = lab[sc.COMPOUND].astype(str).to_numpy()
    dist = other_compound_distances(sc.to_matrix(lab), compounds, metric=metric)
    # Strangeness as the calls measure it: the distance to the nearest known treatment of
    # another compound.
    strangeness = dist[:, ~novel].min(axis=1)
    return _held_out_table(lab, novel, knn_scores(dist, labels, len(known)), labels, known,
                           confidence, scheme, seed, strangeness)


def _known_labels(table: pd.DataFrame, novel: np.ndarray, known: list[str]) -> np.ndarray:
    """Index of each treatment's MoA among the known ones; -1 for the held-out MoA."""
    return np.array([known.index(m) if not n else -1
                     for m, n in zip(table[sc.MOA].astype(str), novel, strict=True)])


def _held_out_table(lab: pd.DataFrame, novel: np.ndarray, scores: np.ndarray,
                    labels: np.ndarray, known: list[str], confidence: float, scheme: str,
                    seed: int, strangeness: np.ndarray) -> tuple[pd.DataFrame, str]:
    """p-values calibrated leave-one-compound-out on the known treatments; the held-out
    ones (label -1) are never calibration points, nor references of the typicality."""
    compounds = lab[sc.COMPOUND].astype(str).to_numpy()
    calibrated = calibrate_by_group(scores, labels, compounds, len(known), seed)
    sizes = {c: int(n) for c, n in zip(known, calibrated.sizes, strict=True)}
    used = schemes_used(scheme, [confidence], sizes)[confidence]
    p = calibrated.mondrian if used == "mondrian" else calibrated.marginal
    typical = typicality(strangeness[~novel], compounds[~novel], strangeness[novel])
    typical_p = np.empty(len(lab))
    typical_p[novel], typical_p[~novel] = typical.queries, typical.labelled
    empty = (p <= 1 - confidence).all(1)
    table = lab[[sc.TREATMENT, sc.COMPOUND, sc.MOA]].assign(
        novel=novel, novelty_score=1 - p.max(axis=1), empty_set=empty,
        none_of_these=empty | (typical_p <= 1 - confidence))
    return table, used


def _novelty_row(moa: str, table: pd.DataFrame, used: str, confidence: float) -> dict:
    novel = table["novel"].to_numpy()
    return {"held_out_moa": moa, "n_novel": int(novel.sum()), "n_known": int((~novel).sum()),
            "confidence": confidence, "scheme": used,
            "detection_rate": float(table["empty_set"][novel].mean()),
            "false_alarm_rate": float(table["empty_set"][~novel].mean()),
            "auroc": float(roc_auc_score(novel, table["novelty_score"])),
            "none_of_these_rate": float(table["none_of_these"][novel].mean()),
            "none_of_these_false_alarm_rate": float(table["none_of_these"][~novel].mean())}


def _check_three(moas: list[str]) -> None:
    if len(moas) < 3:
        raise CellmorphError("novelty (leave-one-MoA-out) needs three MoAs with two compounds "
                             "each: two stay known while one is held out")


def leave_one_moa_out(treatments: pd.DataFrame, *, metric: str = "cosine",
                      confidence: float = 0.9, scheme: str = "auto",
                      seed: int = 0) -> pd.DataFrame:
    """One row per held-out MoA: detection and false-alarm rates of empty sets at
    ``confidence``, and the AUROC of the novelty score (held-out vs known treatments)."""
    lab = _usable(treatments)
    moas = sorted(lab[sc.MOA].astype(str).unique())
    _check_three(moas)
    rows = []
    for moa in moas:
        table, used = novelty_scores(lab, moa, metric=metric, confidence=confidence,
                                     scheme=scheme, seed=seed)
        rows.append(_novelty_row(moa, table, used, confidence))
    return pd.DataFrame(rows, columns=NOVELTY_COLUMNS)


def novelty_from_probabilities(known: pd.DataFrame, unseen: pd.DataFrame, *,
                               confidence: float = 0.9, scheme: str = "auto",
                               seed: int = 0) -> pd.DataFrame:
    """The leave-one-MoA-out table of a fine-tuning run.

    ``known``: every treatment's out-of-fold probabilities (``Prob_<MoA>``, from the fold
    that left its compound out). ``unseen``: treatment probabilities from models that never
    saw the treatment's MoA (the fold that left it out). For each MoA held out, the known
    treatments of the other MoAs are calibrated leave-one-compound-out as usual and the
    held-out MoA's treatments are tested against them; probabilities are renormalised over
    the known MoAs first, so the held-out class's own output, never trained, plays no part.
    MoAs missing from ``unseen`` are skipped.
    """
    classes = sc.classes_of(known)
    moas = [m for m in classes if (unseen[sc.MOA].astype(str) == m).any()]
    _check_three(classes)
    rows = []
    for moa in moas:
        others = [c for c in classes if c != moa]
        lab = pd.concat([known[known[sc.MOA].astype(str).isin(others)],
                         unseen[unseen[sc.MOA].astype(str) == moa]], ignore_index=True)
        probs = lab[[f"{sc.PROB_PREFIX}{c}" for c in others]].to_numpy(float)
        probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
        novel = (lab[sc.MOA].astype(str) == moa).to_numpy()
        labels = _known_labels(lab, novel, others)
        table, used = _held_out_table(lab, novel, hinge(probs), labels, others, confidence,
                                      scheme, seed, 1 - probs.max(axis=1))
        rows.append(_novelty_row(moa, table, used, confidence))
    return pd.DataFrame(rows, columns=NOVELTY_COLUMNS)


def _usable(treatments: pd.DataFrame) -> pd.DataFrame:
    """Labelled treatments of MoAs with two compounds or more (the others cannot be matched
    under NSC, as in 1-NN evaluation)."""
    lab = sc.treatments(treatments)
    return lab[~lab[sc.MOA].isin(single_compound_moas(lab))].reset_index(drop=True)


@dataclass(frozen=True)
class NoveltySummary:
    """How well unseen mechanisms stand out: means over the held-out MoAs, and each MoA's
    AUROC."""

    confidence: float
    mean_auroc: float
    min_auroc: float
    max_auroc: float
    detection_rate: float
    false_alarm_rate: float
    per_moa: dict[str, float]
    none_of_these_rate: float | None = None  # the calls' rule: empty set or atypical
    none_of_these_false_alarm_rate: float | None = None


def summarize_novelty(table: pd.DataFrame) -> NoveltySummary:
    """The leave-one-MoA-out table in a few numbers (for metrics.json and the terminal)."""
    return NoveltySummary(float(table["confidence"].iloc[0]), float(table["auroc"].mean()),
                          float(table["auroc"].min()), float(table["auroc"].max()),
                          float(table["detection_rate"].mean()),
                          float(table["false_alarm_rate"].mean()),
                          {r.held_out_moa: round(r.auroc, 4) for r in table.itertuples()},
                          *(float(table[c].mean()) if c in table.columns else None
                            for c in ("none_of_these_rate", "none_of_these_false_alarm_rate")))
