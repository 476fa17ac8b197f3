"""The shared schema: aggregation tile -> image -> well -> treatment (checked against direct
pandas), feature columns, role filters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.schema import aggregate, feature_columns


def _profiles() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for plate, batch in (("P1", "W1"), ("P2", "W1"), ("P3", "W2")):
        for well in ("A01", "A02"):
            for site in (1, 2, 3):
                rows.append({sc.PLATE: plate, sc.WELL: well, sc.SITE: site, sc.BATCH: batch,
                             sc.TREATMENT: f"t{well}", "f1": rng.normal(), "f2": rng.normal()})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("method", ["mean", "median"])
def test_aggregate_matches_pandas(method: str) -> None:
    df = _profiles()
    wells = aggregate(df, [sc.PLATE, sc.WELL], method)
    expected = df.groupby([sc.PLATE, sc.WELL])[["f1", "f2"]].agg(method).reset_index()
    np.testing.assert_allclose(wells[["f1", "f2"]], expected[["f1", "f2"]])
    assert (wells["Metadata_Count"] == 3).all()
    assert sc.SITE not in wells.columns  # varies within a well: dropped
    treat = aggregate(wells.drop(columns="Metadata_Count"), [sc.TREATMENT], method)
    assert list(treat[sc.BATCH]) == ["W1", "W1"]  # most frequent batch of 3 plates


def test_feature_column_errors() -> None:
    with pytest.raises(CellmorphError, match="no Metadata_ columns"):
        feature_columns(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(CellmorphError, match=r"non-numeric feature columns \['Plate'\]"):
        feature_columns(pd.DataFrame({"Metadata_Well": ["A01"], "Plate": ["p"], "f": [1.0]}))
    with pytest.raises(CellmorphError, match="no feature columns"):
        feature_columns(pd.DataFrame({"Metadata_Well": ["A01"]}))
