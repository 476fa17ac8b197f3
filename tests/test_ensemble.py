"""Replicate ensembles: mean probabilities over seeds, their spread, disagreements."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellmorph import schema as sc
from cellmorph.evaluation.ensemble import ensemble_seeds


def _seed(probs_a: list[float]) -> pd.DataFrame:
    return pd.DataFrame({sc.TREATMENT: ["t1", "t2", "t3"], sc.MOA: ["A", "B", "A"],
                         "Prob_A": probs_a, "Prob_B": [1 - p for p in probs_a]})


def test_mean_spread_and_disagreements() -> None:
    seeds = [_seed([0.9, 0.2, 0.45]), _seed([0.7, 0.4, 0.65]), _seed([0.8, 0.3, 0.6])]
    result = ensemble_seeds(seeds, [0, 1, 2])
    t = result.table.set_index(sc.TREATMENT)
    assert t.loc["t1", "Prob_A"] == pytest.approx(0.8)
    assert t.loc["t1", "Std_A"] == pytest.approx(np.std([0.9, 0.7, 0.8]))
    assert t.loc["t3", "predicted"] == "A"  # mean 0.567: the ensemble gets it right
    assert list(result.disagreements[sc.TREATMENT]) == ["t3"]  # seed 0 said B
    assert result.seed_accuracies == pytest.approx([2 / 3, 1.0, 1.0])
    assert result.accuracy == 1.0
    summary = result.summary()
    assert summary.seed_accuracy_sem == pytest.approx(np.std([2 / 3, 1, 1], ddof=1) / np.sqrt(3))
    assert summary.disagreements == ["t3"]


def test_units_missing_from_a_seed_are_left_out() -> None:
    partial = _seed([0.9, 0.2, 0.45]).iloc[:2]
    result = ensemble_seeds([_seed([0.9, 0.2, 0.45]), partial], [0, 1])
    assert list(result.table[sc.TREATMENT]) == ["t1", "t2"]
    assert ensemble_seeds([partial], [5]).summary().seed_accuracy_sem is None
