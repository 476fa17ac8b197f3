"""Plate views: positions, edge effects and Z' against hand calculations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellmorph import schema as sc
from cellmorph.config import EvaluateConfig
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.activity import DISTANCE_TO_CONTROLS
from cellmorph.evaluation.plates import (
    control_z_prime,
    edge_effect,
    plate_format,
    plate_grid,
    well_position,
)
from cellmorph.evaluation.profiles import evaluate_profiles

NAMES = [f"{r}{c:02d}" for r in "ABCDEFGH" for c in range(1, 13)]


def _plate(name: str, rng: np.random.Generator, edge_shift: float = 0.0) -> pd.DataFrame:
    """A 96-well plate of profiles: DMSO in column 6, a positive control in column 7, two
    compounds elsewhere; ``edge_shift`` added to every feature of the edge wells."""
    values = rng.normal(size=(96, 12))
    rows = []
    for i, well in enumerate(NAMES):
        row, col = well_position(well)
        compound = {5: "DMSO", 6: "pos"}.get(col, "a" if col < 5 else "b")
        if compound == "pos":
            values[i] += 3.0
        if row in (0, 7) or col in (0, 11):
            values[i] += edge_shift
        rows.append({sc.PLATE: name, sc.WELL: well, sc.COMPOUND: compound, sc.MOA: None, sc.BATCH: "b",
                     sc.TREATMENT: f"{compound}@1", sc.CONCENTRATION: 1.0,
                     sc.ROLE: sc.ROLE_CONTROL if compound == "DMSO" else sc.ROLE_UNLABELLED})
    return pd.concat([pd.DataFrame(rows), pd.DataFrame(
        values, columns=[f"Feature_{i}" for i in range(12)])], axis=1)


def test_positions_and_formats() -> None:
    assert well_position("A01") == (0, 0) and well_position("p24") == (15, 23)
    assert plate_format(["A01", "H12"]) == (8, 12)
    assert plate_format(["A01", "I01"]) == (16, 24)  # row I: a 384-well plate
    with pytest.raises(CellmorphError, match="'X' is not a plate position"):
        well_position("X")
    grid = plate_grid(pd.DataFrame({sc.WELL: ["B03", "B03", "H12"], "v": [1.0, 3.0, 5.0]}), "v")
    assert grid.shape == (8, 12) and grid[1, 2] == 2.0 and grid[7, 11] == 5.0
    assert np.isnan(grid).sum() == 94


def test_a_planted_edge_gradient_is_flagged_on_its_plate_only() -> None:
    rng = np.random.default_rng(0)
    wells = pd.concat([_plate("clean", rng), _plate("rim", rng, edge_shift=1.5)],
                      ignore_index=True)
    result = evaluate_profiles(wells, EvaluateConfig(map=False, potency=False,
                                                     positive_controls=["pos"]))
    edges = result.plates.edges.set_index(sc.PLATE)
    assert edges.loc["rim", "p_value"] < 0.001 and edges.loc["rim", "difference"] > 0
    assert edges.loc["clean", "p_value"] > 0.05
    assert edges.loc["rim", "n_edge"] == 36 and edges.loc["rim", "n_inner"] == 60
    assert result.metrics()["plates"]["edge_effect_plates"] == ["rim"]
    # Z' by hand, on the distances the plate view computed.
    activity = result.plates.activity
    pos = activity.loc[activity[sc.COMPOUND] == "pos", DISTANCE_TO_CONTROLS].to_numpy()
    neg = activity.loc[activity[sc.COMPOUND] == "DMSO", DISTANCE_TO_CONTROLS].to_numpy()
    by_hand = 1 - 3 * (pos.std(ddof=1) + neg.std(ddof=1)) / abs(pos.mean() - neg.mean())
    assert result.metrics()["plates"]["z_prime"] == pytest.approx(by_hand)
    assert len(pos) == len(neg) == 16


def test_z_prime_per_plate_and_refusals() -> None:
    wells = pd.DataFrame({sc.PLATE: ["p", "p", "p", "p", "q", "q"],
                          sc.WELL: ["A01", "A02", "A03", "A04", "A01", "A02"],
                          sc.COMPOUND: ["pos", "pos", "DMSO", "DMSO", "pos", "DMSO"],
                          sc.ROLE: ["unlabelled", "unlabelled", "control", "control",
                                    "unlabelled", "control"],
                          "v": [10.0, 12.0, 1.0, 2.0, 11.0, 1.5]})
    z = control_z_prime(wells, "v", ["pos"]).set_index(sc.PLATE)["z_prime"]
    sd = np.std([10.0, 12.0], ddof=1) + np.std([1.0, 2.0], ddof=1)
    assert z["p"] == pytest.approx(1 - 3 * sd / 9.5)
    assert np.isnan(z["q"])  # one well a side
    with pytest.raises(CellmorphError, match=r"positive control\(s\) \['taxol'\]"):
        control_z_prime(wells, "v", ["taxol"])
    assert edge_effect(wells, "v")["n_edge"].tolist() == [4, 2]  # row A is the edge


def test_wells_not_named_by_position_skip_the_plate_views() -> None:
    rng = np.random.default_rng(1)
    wells = _plate("p", rng).assign(**{sc.WELL: lambda t: [f"well-{i}" for i in range(len(t))]})
    result = evaluate_profiles(wells, EvaluateConfig(map=False, potency=False))
    assert result.plates is None and "'well-0' is not a plate position" in result.skipped["plates"]
    with pytest.raises(CellmorphError, match="positive_controls: Z' is computed"):
        evaluate_profiles(wells, EvaluateConfig(map=False, positive_controls=["pos"]))
