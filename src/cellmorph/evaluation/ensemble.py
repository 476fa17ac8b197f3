"""Replicate ensembles: the seeds of a run combined into one prediction per treatment.

Kensert et al. saw replicate runs land in different minima; averaging their probabilities
is the simplest remedy, and the spread across seeds says how much a prediction depends on
the run. Treatments where the seeds disagree are listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.records import ShortRepr

STD_PREFIX = "Std_"


@dataclass(repr=False)
class EnsembleResult(ShortRepr):
    """Mean probabilities over seeds, their spread, and where the seeds disagree."""

    level: str
    seeds: list[int]
    table: pd.DataFrame  # metadata, Prob_ (mean), Std_ (spread), Pred_seed<S>, predicted...
    seed_accuracies: list[float]

    @property
    def accuracy(self) -> float:
        """Accuracy of the ensemble's predictions (argmax of the mean probabilities)."""
        return float(self.table["correct"].mean())

    @property
    def disagreements(self) -> pd.DataFrame:
        """The treatments (or wells, images) whose seeds predict different MoAs."""
        return self.table[~self.table["seeds_agree"]]

    def summary(self) -> EnsembleSummary:
        """Ensemble vs per-seed accuracy, for metrics.json."""
        values = np.asarray(self.seed_accuracies)
        sem = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
        return EnsembleSummary(self.level, list(self.seeds), self.accuracy, float(values.mean()),
                               sem, int(len(self.table)), int(len(self.disagreements)),
                               list(self.disagreements[sc.LEVEL_KEYS[self.level][-1]]))


@dataclass(frozen=True)
class EnsembleSummary:
    """The seeds combined: the ensemble's accuracy beside the seeds' mean and SEM, and the
    units where the seeds disagree."""

    level: str
    seeds: list[int]
    ensemble_accuracy: float
    seed_accuracy_mean: float
    seed_accuracy_sem: float | None
    n: int
    n_disagreements: int
    disagreements: list[str]


def ensemble_seeds(tables: Sequence[pd.DataFrame], seeds: Sequence[int],
                   level: str = "treatment") -> EnsembleResult:
    """Combine one prediction table per seed (same level, ``Prob_`` columns) into an ensemble.

    Units present in every seed's table are kept (a partial seed limits the ensemble).
    """
    if not tables:
        raise CellmorphError("an ensemble needs at least one seed's predictions")
    keys = sc.LEVEL_KEYS[level]
    probs = sc.prob_columns(tables[0])
    indexed = [t.set_index(keys) for t in tables]
    common = indexed[0].index
    for t in indexed[1:]:
        common = common.intersection(t.index)
    stack = np.stack([t.loc[common, probs].to_numpy(float) for t in indexed])
    meta = [c for c in indexed[0].columns if c.startswith(sc.METADATA_PREFIX)]
    out = indexed[0].loc[common, meta].copy()
    mean = stack.mean(axis=0)
    out[probs] = mean
    out[[STD_PREFIX + p.removeprefix(sc.PROB_PREFIX) for p in probs]] = stack.std(axis=0)
    classes = np.asarray(sc.classes_of(tables[0]))
    per_seed = classes[stack.argmax(axis=2)]
    for s, preds in zip(seeds, per_seed, strict=True):
        out[f"Pred_seed{s}"] = preds
    out["predicted"] = classes[mean.argmax(axis=1)]
    out["correct"] = out["predicted"] == out[sc.MOA].astype(str)
    out["seeds_agree"] = (per_seed == per_seed[0]).all(axis=0)
    accuracies = [float((p == out[sc.MOA].astype(str).to_numpy()).mean()) for p in per_seed]
    return EnsembleResult(level, list(seeds), out.reset_index(), accuracies)
