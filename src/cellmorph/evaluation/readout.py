"""Scoring the translocation readout as a classifier of positive vs negative wells: AUC,
Z'-factor, and the accuracy of a threshold fitted on the other cell line(s) (the same
leave-one-cell-line-out protocol the deep models of Kensert et al. are scored with)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.plates import z_prime
from cellmorph.evaluation.potency import potency
from cellmorph.profiling.translocation import (
    RATIO,
    TranslocationSettings,
    aggregate_fields,
    translocation_fields,
)
from cellmorph.records import ShortRepr


@dataclass(repr=False)
class TranslocationResult(ShortRepr):
    """The readout per field and per well, and how well it separates the classes."""

    settings: TranslocationSettings
    fields: pd.DataFrame
    wells: pd.DataFrame
    scores: dict = field(default_factory=dict)
    potency: pd.DataFrame | None = None  # the readout's EC50 per compound and cell line

    def summary_table(self) -> pd.DataFrame:
        """The scores of the readout, one row (what a notebook shows)."""
        return pd.DataFrame([self.scores]) if self.scores else \
            self.wells[[c for c in self.wells.columns if c != "Metadata_Path"]].head(12)


def score_readout(wells: pd.DataFrame, positive: str, *,
                  group_by: str | None = sc.CELL_LINE) -> dict:
    """AUC, Z'-factor and hold-out threshold accuracy of the well ratios.

    ``positive`` is the label of translocated wells; every other label counts as negative.
    With two or more groups (cell lines), each group is predicted with the threshold fitted
    on the others (midway between the class medians); scores that need more wells than there
    are come out as None, with a note.
    """
    lab = sc.treatments(wells).dropna(subset=[RATIO])
    if positive not in set(lab[sc.MOA]):
        raise CellmorphError(f"translocation: no labelled well is {positive!r} (labels: "
                             f"{sorted(set(lab[sc.MOA]))}); name the positive label")
    y = (lab[sc.MOA] == positive).to_numpy()
    x = lab[RATIO].to_numpy(float)
    scores: dict = {"positive": positive, "n_positive": int(y.sum()),
                    "n_negative": int((~y).sum()),
                    "median_ratio_positive": float(np.median(x[y])),
                    "median_ratio_negative": float(np.median(x[~y])) if (~y).any() else None}
    if y.sum() < 2 or (~y).sum() < 2:
        scores["note"] = "fewer than two wells in a class: AUC, Z' and accuracy need more"
        return scores
    scores["auc"] = float(roc_auc_score(y, x))
    scores["z_prime"] = z_prime(x[y], x[~y])
    if group_by and group_by in lab.columns and lab[group_by].nunique() > 1:
        correct = []
        for group in sorted(lab[group_by].unique()):
            test = (lab[group_by] == group).to_numpy()
            train_pos, train_neg = x[~test & y], x[~test & ~y]
            if len(train_pos) == 0 or len(train_neg) == 0:
                continue
            threshold = (np.median(train_pos) + np.median(train_neg)) / 2
            high_is_positive = np.median(train_pos) > np.median(train_neg)
            predicted = (x[test] > threshold) == high_is_positive
            correct.extend(predicted == y[test])
        scores["holdout"] = group_by
        scores["accuracy"] = float(np.mean(correct)) if correct else None
    else:
        scores["note"] = ("one group only: no hold-out threshold accuracy (it would be "
                          "fitted and scored on the same wells)")
    return scores


def translocation_readout(index: pd.DataFrame, settings: TranslocationSettings, *,
                          positive: str | None = None, default_positive: str | None = None,
                          progress_bar: bool = True) -> TranslocationResult:
    """The readout of every field and well of ``index``, scored when wells are labelled:
    ``positive`` is the translocated label (default: ``default_positive`` where the labels
    hold it)."""
    fields = translocation_fields(index, settings, progress_bar=progress_bar)
    wells = aggregate_fields(fields, "well")
    labels = set(sc.treatments(wells)[sc.MOA].dropna())
    scores = {}
    if labels:
        positive = positive or (default_positive if default_positive in labels else None)
        if positive is None:
            raise CellmorphError(f"translocation: which label is the translocated one? give "
                                 f"positive= (labels: {sorted(labels)})")
        scores = score_readout(wells, positive)
    return TranslocationResult(settings, fields, wells, scores,
                               potency(wells, RATIO, by=(sc.COMPOUND, sc.CELL_LINE)))
