"""mAP numbers equal copairs called directly on the same table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from copairs.map import average_precision, mean_average_precision

from cellmorph import schema as sc
from cellmorph.config import EvaluateConfig
from cellmorph.evaluation.map import moa_consistency, phenotypic_activity
from cellmorph.evaluation.profiles import prepare_profiles
from cellmorph.profiling.cellprofiler import read_profiles
from cellmorph.schema import TREATMENT_KEYS, aggregate, feature_columns


@pytest.fixture(scope="module")
def wells() -> pd.DataFrame:
    w, _, _ = prepare_profiles(read_profiles("ljosa2013"), EvaluateConfig())
    return w


def test_moa_consistency_equals_copairs(wells: pd.DataFrame) -> None:
    treat = aggregate(wells[wells[sc.ROLE] == sc.ROLE_TREATMENT], TREATMENT_KEYS)
    ours = moa_consistency(treat, null_size=500, seed=1).set_index(sc.MOA)
    feats = feature_columns(treat)
    ap = average_precision(treat.drop(columns=feats), treat[feats].to_numpy(),
                           pos_sameby=[sc.MOA], pos_diffby=[sc.COMPOUND], neg_sameby=[],
                           neg_diffby=[sc.MOA], progress_bar=False)
    ref = mean_average_precision(ap, [sc.MOA], null_size=500, threshold=0.05, seed=1,
                                 progress_bar=False).set_index(sc.MOA)
    assert len(ours) == 12
    np.testing.assert_allclose(ours["mean_average_precision"],
                               ref.loc[ours.index, "mean_average_precision"])
    np.testing.assert_allclose(ours["p_value"], ref.loc[ours.index, "p_value"])


def test_phenotypic_activity_equals_copairs(wells: pd.DataFrame) -> None:
    ours = phenotypic_activity(wells, null_size=500, seed=2).set_index(sc.TREATMENT)
    df = wells.reset_index(drop=True)
    df["ref"] = np.where(df[sc.ROLE] == sc.ROLE_CONTROL, df.index, -1)
    feats = feature_columns(wells)
    ap = average_precision(df.drop(columns=feats), df[feats].to_numpy(),
                           pos_sameby=[sc.TREATMENT, "ref"], pos_diffby=[], neg_sameby=[],
                           neg_diffby=[sc.TREATMENT, "ref"], progress_bar=False)
    ap = ap[ap["ref"] == -1]
    ref = mean_average_precision(ap, [sc.TREATMENT], null_size=500, threshold=0.05, seed=2,
                                 progress_bar=False).set_index(sc.TREATMENT)
    assert len(ours) == 103
    np.testing.assert_allclose(ours["mean_average_precision"],
                               ref.loc[ours.index, "mean_average_precision"])
    assert ours["below_corrected_p"].mean() > 0.5  # most BBBC021 treatments are active


def test_no_replicate_wells_leave_map_out_with_the_reason(caplog) -> None:
    """A screen of one well a treatment (a user's small plate): a compound's doses are then
    its replicates for activity; with one well a compound, activity is skipped and says why.
    MoA consistency (treatment profiles of other compounds) and 1-NN are still reported."""
    from cellmorph.evaluation.profiles import evaluate_profiles

    wells = read_profiles("ljosa2013")
    controls = wells[sc.is_control(wells)]
    single = wells[~sc.is_control(wells)].drop_duplicates(sc.TREATMENT)
    result = evaluate_profiles(pd.concat([single, controls], ignore_index=True),
                               EvaluateConfig(map_null_size=100, conformal=False))
    assert result.notes["map_activity_by"].startswith("compound")
    assert set(result.map_activity[sc.COMPOUND]) <= set(single[sc.COMPOUND])
    assert result.map_consistency is not None and "map_activity" in result.metrics()
    assert result.nn_result("nsc", "cosine").n_treatments == 103
    one = single.drop_duplicates(sc.COMPOUND)
    result = evaluate_profiles(pd.concat([one, controls], ignore_index=True),
                               EvaluateConfig(map_null_size=100, conformal=False,
                                              novelty=False))
    assert result.map_activity is None and "map_activity" not in result.metrics()
    assert result.skipped["map_activity"].startswith("no replicate wells; it needs control")
