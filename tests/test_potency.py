"""Potency: four-parameter logistic fits, their EC50 intervals and the flat-curve flag, on
simulated dose-response curves whose EC50 is planted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellmorph import schema as sc
from cellmorph.evaluation.potency import compound_potency, hill, potency

# A screen's dose series: 9 half-log doses over four decades, 3 wells each.
DOSES = np.repeat(10.0 ** np.arange(-3, 1.01, 0.5), 3)


def _curve(rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """A planted EC50 inside the doses, a slope of 0.7-2.5, a top of 1-3 over a bottom of 0,
    and noise of 15 % of the top."""
    log_ec50, slope, top = rng.uniform(-2.5, 0.5), rng.uniform(0.7, 2.5), rng.uniform(1, 3)
    y = hill(np.log10(DOSES), 0.0, top, log_ec50, slope)
    return 10 ** log_ec50, y + rng.normal(0, 0.15 * top, len(DOSES))


def test_intervals_cover_planted_ec50s_and_flat_curves_are_flagged() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(100):
        ec50, y = _curve(rng)
        rows.append({"planted": ec50, **compound_potency(DOSES, y, n_boot=100, seed=i)})
    fitted = pd.DataFrame(rows)
    fits = fitted[fitted["fit"] == "ok"]
    covered = ((fits["ec50_low"] <= fits["planted"])
               & (fits["planted"] <= fits["ec50_high"])).mean()
    print(f"95 % intervals cover {covered:.2f} of {len(fits)} planted EC50s; "
          f"{(fitted['fit'] != 'ok').sum()} curves not fitted")
    # Measured 0.89 here (100 bootstrap replicates); bench/potency.py measures it on 1,000
    # compounds. A hundred compounds leave a Monte Carlo error of 3 points around a
    # coverage of 0.9 and more, hence the floor at two errors below.
    assert len(fits) >= 95 and covered >= 0.84
    flat = [compound_potency(DOSES, rng.normal(1.0, 0.3, len(DOSES)), n_boot=10, seed=i)
            for i in range(50)]
    flagged = np.mean([f["flat"] for f in flat])
    assert flagged >= 0.9  # the F test at 5 %: about 95 %
    assert all(np.isnan(f["ec50"]) for f in flat if f["flat"])  # no EC50 is made up


def test_a_falling_readout_and_the_table() -> None:
    log_dose = np.log10(DOSES)
    falling = hill(log_dose, 2.0, 0.5, -1.0, 1.5)  # the readout drops with the dose
    wells = pd.DataFrame({
        sc.COMPOUND: ["down"] * len(DOSES) + ["few"] * 3 + ["DMSO"] * 3,
        sc.CONCENTRATION: [*DOSES, 0.1, 1.0, 10.0, 0.0, 0.0, 0.0],
        sc.ROLE: ["unlabelled"] * (len(DOSES) + 3) + ["control"] * 3,
        "activity": [*falling, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]})
    table = potency(wells, "activity", n_boot=20)
    assert table[sc.COMPOUND].tolist() == ["down"]  # 3 doses are too few; controls never
    row = table.iloc[0]
    assert row["fit"] == "ok" and row["ec50_in_range"]
    assert abs(np.log10(row["ec50"]) + 1.0) < 1e-3 and row["top"] < row["bottom"]
    empty = potency(wells[wells[sc.COMPOUND] == "few"], "activity")
    assert empty.empty and "ec50" in empty.columns
