"""Median aggregation crop -> image -> well -> treatment, against a hand-computed example."""

from __future__ import annotations

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
