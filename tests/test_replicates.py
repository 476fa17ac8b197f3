"""Percent replicating (Way et al. 2022; JUMP) against a reference written out by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.stats import pearsonr

from cellmorph import schema as sc
from cellmorph.evaluation.replicates import percent_replicating, replicate_correlations


def _wells(values: np.ndarray, treatments: list[str]) -> pd.DataFrame:
    return pd.DataFrame(values, columns=[f"Feature_{i}" for i in range(values.shape[1])]).assign(
        **{sc.TREATMENT: treatments, sc.ROLE: sc.ROLE_TREATMENT})


def test_replicate_correlations_equal_the_pairwise_median_by_hand() -> None:
    rng = np.random.default_rng(3)
    names = ["a"] * 3 + ["b"] * 4 + ["c"] * 2 + ["solo"]
    wells = _wells(rng.normal(size=(len(names), 8)), names)
    wells = pd.concat([wells, _wells(rng.normal(size=(2, 8)), ["DMSO"] * 2).assign(
        **{sc.ROLE: sc.ROLE_CONTROL})], ignore_index=True)
    table = replicate_correlations(wells).set_index(sc.TREATMENT)
    assert sorted(table.index) == ["a", "b", "c"]  # one well: no pair; controls: never
    for name in table.index:
        rows = wells[wells[sc.TREATMENT] == name].filter(like="Feature_").to_numpy()
        pairs = [pearsonr(x, y).statistic for x, y in itertools.combinations(rows, 2)]
        assert np.isclose(table.loc[name, "replicate_correlation"], np.median(pairs))
        assert table.loc[name, "n_wells"] == len(rows)


def test_the_threshold_is_the_nulls_95th_percentile_and_noise_rarely_replicates() -> None:
    rng = np.random.default_rng(4)
    names = [f"t{i}" for i in range(150) for _ in range(3)]
    result = percent_replicating(_wells(rng.normal(size=(len(names), 30)), names),
                                 n_samples=2000)
    assert result.n_replicates == 3 and len(result.null) == 2000
    assert result.threshold == np.percentile(result.null, 95)
    assert (result.table["replicating"]
            == (result.table["replicate_correlation"] > result.threshold)).all()
    # Replicates of pure noise are no closer than non-replicates: about 5 % pass.
    assert result.percent <= 0.12
    signal = np.repeat(rng.normal(size=(150, 30)), 3, axis=0)
    planted = percent_replicating(_wells(signal + rng.normal(0, 0.5, signal.shape), names))
    assert planted.percent == 1.0
