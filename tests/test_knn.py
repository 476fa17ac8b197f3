"""NSC/NSCB 1-NN accuracy, checked against scikit-learn on the real Ljosa 2013 profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsClassifier

from cellmorph import schema as sc
from cellmorph.config import EvaluateConfig
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.knn import nn_accuracy
from cellmorph.evaluation.profiles import prepare_profiles
from cellmorph.profiling.cellprofiler import read_profiles
from cellmorph.schema import TREATMENT_KEYS, aggregate, to_matrix


@pytest.fixture(scope="module")
def ljosa_treatments() -> pd.DataFrame:
    wells, _, _ = prepare_profiles(read_profiles("ljosa2013"), EvaluateConfig())
    return aggregate(wells[wells[sc.ROLE] == sc.ROLE_TREATMENT], TREATMENT_KEYS)


def _sklearn_nsc(treatments: pd.DataFrame, metric: str) -> float:
    X, y = to_matrix(treatments), treatments[sc.MOA].to_numpy()
    compounds = treatments[sc.COMPOUND].to_numpy()
    correct = 0
    for c in np.unique(compounds):
        test = compounds == c
        knn = KNeighborsClassifier(n_neighbors=1, metric=metric, algorithm="brute")
        knn.fit(X[~test], y[~test])
        correct += (knn.predict(X[test]) == y[test]).sum()
    return correct / len(y)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nsc_matches_sklearn(ljosa_treatments: pd.DataFrame, metric: str) -> None:
    ours = nn_accuracy(ljosa_treatments, metric=metric, holdout="nsc")
    assert ours.n_treatments == 103
    assert ours.accuracy == pytest.approx(_sklearn_nsc(ljosa_treatments, metric))


def test_ljosa_nsc_is_in_the_published_range(ljosa_treatments: pd.DataFrame) -> None:
    res = nn_accuracy(ljosa_treatments, metric="cosine", holdout="nsc")
    assert 0.80 <= res.accuracy <= 0.95  # Ljosa 2013 / Singh 2014 mean profiles: 80s %


def test_nscb_excludes_batch_and_drops_single_batch_moas(ljosa_treatments) -> None:
    res = nn_accuracy(ljosa_treatments, metric="cosine", holdout="nscb")
    assert res.dropped_moas == ["Cholesterol-lowering", "Kinase inhibitors"]
    assert res.n_treatments == 103 - (ljosa_treatments[sc.MOA].isin(res.dropped_moas)).sum()
    p = res.predictions.merge(ljosa_treatments[[sc.TREATMENT, sc.BATCH]].rename(
        columns={sc.TREATMENT: "neighbour", sc.BATCH: "nb_batch"}), on="neighbour")
    assert (p[sc.BATCH] != p["nb_batch"]).all()
    assert (p[sc.COMPOUND] != p["neighbour"].str.split("@").str[0]).all()


def test_single_compound_per_moa_is_an_error() -> None:
    df = pd.DataFrame({sc.TREATMENT: ["a@1", "b@1"], sc.COMPOUND: ["a", "b"],
                       sc.CONCENTRATION: [1.0, 1.0], sc.MOA: ["m1", "m2"], sc.BATCH: ["w", "w"],
                       sc.ROLE: sc.ROLE_TREATMENT, "f": [0.0, 1.0]})
    with pytest.raises(CellmorphError, match="every MoA has a single compound"):
        nn_accuracy(df)


def test_single_compound_moa_is_left_out_and_listed(ljosa_treatments: pd.DataFrame) -> None:
    sub = ljosa_treatments[ljosa_treatments[sc.COMPOUND] != "simvastatin"]
    res = nn_accuracy(sub, holdout="nsc")
    assert res.dropped_moas == ["Cholesterol-lowering"]
    assert "Cholesterol-lowering" not in set(res.predictions[sc.MOA])
    assert "Cholesterol-lowering" not in set(res.predictions["predicted"])


def test_one_scorable_moa_is_refused_not_reported_as_100_percent(
        ljosa_treatments: pd.DataFrame) -> None:
    """BAD case: after the single-compound MoAs were dropped one MoA was left, and 1-NN among
    one MoA (never wrong) was reported as 100 %."""
    keep = ljosa_treatments[sc.MOA].isin(["Actin disruptors", "Cholesterol-lowering"])
    sub = ljosa_treatments[keep & (ljosa_treatments[sc.COMPOUND] != "simvastatin")]
    assert sub.groupby(sc.MOA)[sc.COMPOUND].nunique().min() == 1  # one MoA is unmatchable
    with pytest.raises(CellmorphError, match=r"only one MoA \(Actin disruptors\).*always right"):
        nn_accuracy(sub, holdout="nsc")
