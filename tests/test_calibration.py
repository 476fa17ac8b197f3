"""Calibrated probabilities: ECE as defined (top-label, equal-width bins), temperature scaling
that recovers a known temperature, and no leak (a compound's temperature never sees it)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from cellmorph import schema as sc
from cellmorph.evaluation.calibration import (
    calibrate_loco,
    expected_calibration_error,
    fit_temperature,
    scale,
)


def test_ece_by_hand() -> None:
    probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.55, 0.45], [0.35, 0.65]])
    truth = np.array([0, 1, 0, 1])
    # bins: 0.9-1 {0.95 right}, 0.8-0.9 {0.85 wrong}, 0.6-0.7 {0.65 right}, 0.5-0.6 {0.55 right}
    expected = (abs(1 - 0.95) + abs(0 - 0.85) + abs(1 - 0.65) + abs(1 - 0.55)) / 4
    assert expected_calibration_error(probs, truth) == pytest.approx(expected)


def test_temperature_is_recovered() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 5))
    truth = np.array([rng.choice(5, p=p) for p in softmax(logits, axis=1)])
    overconfident = softmax(2.0 * logits, axis=1)  # what a model that is too sure reports
    assert fit_temperature(overconfident, truth) == pytest.approx(2.0, rel=0.1)
    fixed = scale(overconfident, 2.0)
    assert expected_calibration_error(fixed, truth) < expected_calibration_error(
        overconfident, truth)


def _table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(12):
        moa = c % 3
        for conc in (1, 3):
            logits = rng.normal(0, 1, 3)
            logits[moa] += 2.0
            p = softmax(3 * logits)  # overconfident
            rows.append({sc.TREATMENT: f"c{c}@{conc}", sc.COMPOUND: f"c{c}",
                         sc.CONCENTRATION: conc, sc.MOA: f"m{moa}",
                         **{f"Prob_m{k}": p[k] for k in range(3)}})
    return pd.DataFrame(rows)


def test_calibration_never_sees_the_compound_it_is_applied_to() -> None:
    table = _table()
    before = calibrate_loco(table).table
    changed = table.copy()
    own = changed[sc.COMPOUND] == "c4"
    changed.loc[own, sc.MOA] = "m2"  # c4's own labels: not used for c4's temperature
    after = calibrate_loco(changed).table
    cols = [c for c in before.columns if c.startswith("Calibrated_")]
    np.testing.assert_array_equal(before.loc[own, cols], after.loc[own, cols])
    assert (before.loc[own, "Metadata_Temperature"] == after.loc[own, "Metadata_Temperature"]).all()
    # ... but they are used for every other compound's.
    assert not np.allclose(before.loc[~own, "Metadata_Temperature"],
                           after.loc[~own, "Metadata_Temperature"])
    # Each compound's temperature is the one fitted on the other compounds alone.
    probs = table[[f"Prob_m{k}" for k in range(3)]].to_numpy()
    truth = table[sc.MOA].str[1].astype(int).to_numpy()
    others = (table[sc.COMPOUND] != "c4").to_numpy()
    assert before.loc[own, "Metadata_Temperature"].iloc[0] == pytest.approx(
        fit_temperature(probs[others], truth[others]))


def test_calibration_improves_an_overconfident_table() -> None:
    result = calibrate_loco(pd.concat([_table(s).assign(
        **{sc.COMPOUND: lambda t, s=s: t[sc.COMPOUND] + f"-{s}"}) for s in range(4)],
        ignore_index=True))
    assert result.ece_after < result.ece_before
    assert result.table["Metadata_Temperature"].median() > 1  # it cools the probabilities
    calibrated = result.table[[c for c in result.table.columns if c.startswith("Calibrated_")]]
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
