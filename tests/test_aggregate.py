"""Aggregation tile -> image -> well -> treatment, checked against direct pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellmorph.datasets import index as ix
from cellmorph.errors import CellmorphError
from cellmorph.profiling.aggregate import aggregate, feature_columns


def _profiles() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for plate, batch in (("P1", "W1"), ("P2", "W1"), ("P3", "W2")):
        for well in ("A01", "A02"):
            for site in (1, 2, 3):
                rows.append({ix.PLATE: plate, ix.WELL: well, ix.SITE: site, ix.BATCH: batch,
                             ix.TREATMENT: f"t{well}", "f1": rng.normal(), "f2": rng.normal()})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("method", ["mean", "median"])
def test_aggregate_matches_pandas(method: str) -> None:
    df = _profiles()
    wells = aggregate(df, [ix.PLATE, ix.WELL], method)
    expected = df.groupby([ix.PLATE, ix.WELL])[["f1", "f2"]].agg(method).reset_index()
    np.testing.assert_allclose(wells[["f1", "f2"]], expected[["f1", "f2"]])
    assert (wells["Metadata_Count"] == 3).all()
    assert ix.SITE not in wells.columns  # varies within a well: dropped
    treat = aggregate(wells.drop(columns="Metadata_Count"), [ix.TREATMENT], method)
    assert list(treat[ix.BATCH]) == ["W1", "W1"]  # most frequent batch of 3 plates


def test_feature_column_errors() -> None:
    with pytest.raises(CellmorphError, match="no Metadata_ columns"):
        feature_columns(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(CellmorphError, match=r"non-numeric feature columns \['Plate'\]"):
        feature_columns(pd.DataFrame({"Metadata_Well": ["A01"], "Plate": ["p"], "f": [1.0]}))
    with pytest.raises(CellmorphError, match="no feature columns"):
        feature_columns(pd.DataFrame({"Metadata_Well": ["A01"]}))
