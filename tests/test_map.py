"""mAP numbers equal copairs called directly on the same table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from copairs.map import average_precision, mean_average_precision

from cellmorph.config import EvaluateConfig
from cellmorph.datasets import index as ix
from cellmorph.evaluation.map import moa_consistency, phenotypic_activity
from cellmorph.evaluation.pipeline import prepare_profiles
from cellmorph.profiling.aggregate import TREATMENT_KEYS, aggregate, feature_columns
from cellmorph.profiling.cellprofiler import read_profiles


@pytest.fixture(scope="module")
def wells() -> pd.DataFrame:
    w, _ = prepare_profiles(read_profiles("ljosa2013"), EvaluateConfig())
    return w


def test_moa_consistency_equals_copairs(wells: pd.DataFrame) -> None:
    treat = aggregate(wells[wells[ix.ROLE] == ix.ROLE_TREATMENT], TREATMENT_KEYS)
    ours = moa_consistency(treat, null_size=500, seed=1).set_index(ix.MOA)
    feats = feature_columns(treat)
    ap = average_precision(treat.drop(columns=feats), treat[feats].to_numpy(),
                           pos_sameby=[ix.MOA], pos_diffby=[ix.COMPOUND], neg_sameby=[],
                           neg_diffby=[ix.MOA], progress_bar=False)
    ref = mean_average_precision(ap, [ix.MOA], null_size=500, threshold=0.05, seed=1,
                                 progress_bar=False).set_index(ix.MOA)
    assert len(ours) == 12
    np.testing.assert_allclose(ours["mean_average_precision"],
                               ref.loc[ours.index, "mean_average_precision"])
    np.testing.assert_allclose(ours["p_value"], ref.loc[ours.index, "p_value"])


def test_phenotypic_activity_equals_copairs(wells: pd.DataFrame) -> None:
    ours = phenotypic_activity(wells, null_size=500, seed=2).set_index(ix.TREATMENT)
    df = wells.reset_index(drop=True)
    df["ref"] = np.where(df[ix.ROLE] == ix.ROLE_CONTROL, df.index, -1)
    feats = feature_columns(wells)
    ap = average_precision(df.drop(columns=feats), df[feats].to_numpy(),
                           pos_sameby=[ix.TREATMENT, "ref"], pos_diffby=[], neg_sameby=[],
                           neg_diffby=[ix.TREATMENT, "ref"], progress_bar=False)
    ap = ap[ap["ref"] == -1]
    ref = mean_average_precision(ap, [ix.TREATMENT], null_size=500, threshold=0.05, seed=2,
                                 progress_bar=False).set_index(ix.TREATMENT)
    assert len(ours) == 103
    np.testing.assert_allclose(ours["mean_average_precision"],
                               ref.loc[ours.index, "mean_average_precision"])
    assert ours["below_corrected_p"].mean() > 0.5  # most BBBC021 treatments are active
