"""Median aggregation crop -> image -> well -> treatment, against a hand-computed example."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellmorph import schema as sc
from cellmorph.evaluation.predictions import aggregate_probabilities


def _crop(plate, well, site, treatment, moa, p_a):
    return {sc.PLATE: plate, sc.WELL: well, sc.SITE: site, sc.TREATMENT: treatment,
            sc.COMPOUND: treatment.split("@")[0], sc.MOA: moa, "Prob_A": p_a, "Prob_B": 1 - p_a}


@pytest.fixture()
def crops() -> pd.DataFrame:
    rows = [
        # treatment t1@1, well P1/A01: two images (site 1: 3 crops, site 2: 2 crops)
        _crop("P1", "A01", 1, "t1@1", "A", 0.9), _crop("P1", "A01", 1, "t1@1", "A", 0.2),
        _crop("P1", "A01", 1, "t1@1", "A", 0.6),  # image median 0.6
        _crop("P1", "A01", 2, "t1@1", "A", 0.1), _crop("P1", "A01", 2, "t1@1", "A", 0.3),  # 0.2
        # well P2/A01 of the same treatment: one image only (the others are missing)
        _crop("P2", "A01", 3, "t1@1", "A", 0.45), _crop("P2", "A01", 3, "t1@1", "A", 0.35),  # 0.4
        # treatment t2@1: one well, one image
        _crop("P1", "B01", 1, "t2@1", "B", 0.7),
    ]
    return pd.DataFrame(rows)


def test_hand_computed_medians(crops: pd.DataFrame) -> None:
    images = aggregate_probabilities(crops, "image").set_index([sc.PLATE, sc.WELL, sc.SITE])
    assert images.loc[("P1", "A01", 1), "Prob_A"] == pytest.approx(0.6)
    assert images.loc[("P1", "A01", 2), "Prob_A"] == pytest.approx(0.2)
    assert images.loc[("P2", "A01", 3), "Prob_A"] == pytest.approx(0.4)
    wells = aggregate_probabilities(crops, "well").set_index([sc.PLATE, sc.WELL])
    # median of two images = their mean; a well with a single image keeps that image's value
    assert wells.loc[("P1", "A01"), "Prob_A"] == pytest.approx(0.4)
    assert wells.loc[("P2", "A01"), "Prob_A"] == pytest.approx(0.4)
    assert wells.loc[("P1", "A01"), "predicted"] == "B"
    treat = aggregate_probabilities(crops, "treatment").set_index(sc.TREATMENT)
    assert treat.loc["t1@1", "Prob_A"] == pytest.approx(0.4)  # median of wells 0.4 and 0.4
    assert treat.loc["t1@1", "predicted"] == "B" and not treat.loc["t1@1", "correct"]
    assert treat.loc["t2@1", "predicted"] == "A" and not treat.loc["t2@1", "correct"]
    assert len(treat) == 2


def test_not_the_mean_of_crops(crops: pd.DataFrame) -> None:
    """Medians per level differ from one median over all crops of a treatment."""
    flat = crops[crops[sc.TREATMENT] == "t1@1"]["Prob_A"].median()
    treat = aggregate_probabilities(crops, "treatment").set_index(sc.TREATMENT)
    assert flat == pytest.approx(0.35) and treat.loc["t1@1", "Prob_A"] != pytest.approx(flat)


def _votes(probabilities: list[list[float]]) -> pd.DataFrame:
    """One crop in each of len(probabilities) wells of one treatment, over classes A, B, C."""
    return pd.DataFrame([{sc.PLATE: "P1", sc.WELL: f"A0{i + 1}", sc.SITE: 1,
                          sc.TREATMENT: "t@1", sc.COMPOUND: "t", sc.MOA: "C",
                          **{f"Prob_{c}": p for c, p in zip("ABC", row, strict=True)}}
                         for i, row in enumerate(probabilities)])


def test_treatment_probabilities_are_renormalised_medians() -> None:
    """Three wells voting three ways: the per-class medians (0.2, 0.2, 0.3) sum to 0.7, not 1;
    the table holds them divided by that sum, and the argmax is unchanged."""
    crops = _votes([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.1, 0.7]])
    treat = aggregate_probabilities(crops, "treatment")
    probs = treat[["Prob_A", "Prob_B", "Prob_C"]].to_numpy()[0]
    np.testing.assert_allclose(probs, np.array([0.2, 0.2, 0.3]) / 0.7, atol=1e-12)
    assert treat["predicted"].iloc[0] == "C" and treat["correct"].iloc[0]


def test_medians_that_are_all_zero_give_the_uniform_distribution() -> None:
    crops = _votes([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    treat = aggregate_probabilities(crops, "treatment")
    np.testing.assert_allclose(treat[["Prob_A", "Prob_B", "Prob_C"]].to_numpy(), 1 / 3)


def test_levels_in_between_use_the_raw_medians() -> None:
    """Renormalising is applied to the level returned, not inside the chain: the treatment's
    value is the median of the wells' raw medians (Kensert et al.), then renormalised."""
    rows = [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.3, 0.5, 0.2],  # well A01: 3 sites
            [0.6, 0.2, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6],  # well A02
            [0.1, 0.8, 0.1]]  # well A03: 1 site
    crops = _votes(rows)
    crops[sc.WELL] = ["A01"] * 3 + ["A02"] * 3 + ["A03"]
    crops[sc.SITE] = [1, 2, 3, 1, 2, 3, 1]
    raw_wells = np.array([np.median(rows[0:3], axis=0), np.median(rows[3:6], axis=0), rows[6]])
    expected = np.median(raw_wells, axis=0)
    treat = aggregate_probabilities(crops, "treatment")
    np.testing.assert_allclose(treat[["Prob_A", "Prob_B", "Prob_C"]].to_numpy()[0],
                               expected / expected.sum(), atol=1e-12)
