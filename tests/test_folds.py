"""Fold splitting: leave-one-compound-out on the real BBBC021 layout, and its errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellmorph import schema as sc
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.errors import CellmorphError
from cellmorph.training.folds import make_folds


@pytest.fixture(scope="module")
def bbbc021() -> pd.DataFrame:
    return index_bbbc021(None, moa_subset=True, check_files=False)


def test_loco_on_bbbc021(bbbc021: pd.DataFrame) -> None:
    folds = make_folds(bbbc021)
    assert len(folds) == 38
    compound = bbbc021[sc.COMPOUND].to_numpy()
    tested = np.zeros(len(bbbc021), int)
    for f in folds:
        assert set(compound[f.test]) == {f.name}
        assert f.name not in set(compound[f.train])
        assert not (f.train & f.test).any()
        tested += f.test
    is_ctl = (bbbc021[sc.ROLE] == sc.ROLE_CONTROL).to_numpy()
    assert (tested[is_ctl] == 0).all()  # DMSO is never trained on or predicted
    assert not any(is_ctl[f.train].any() for f in folds)
    assert (tested[~is_ctl] == 1).all()  # every labelled field predicted exactly once
    treatments = bbbc021.loc[tested == 1, sc.TREATMENT]
    assert treatments.nunique() == 103


def test_moa_with_one_compound_is_refused(bbbc021: pd.DataFrame) -> None:
    sub = bbbc021[bbbc021[sc.COMPOUND] != "simvastatin"]
    with pytest.raises(CellmorphError, match=r"\['Cholesterol-lowering'\] have fewer than two"):
        make_folds(sub)


def test_fold_without_training_data_for_a_class() -> None:
    df = pd.DataFrame({sc.ROLE: sc.ROLE_TREATMENT, sc.COMPOUND: ["a", "b", "c", "d"],
                       sc.MOA: ["x", "x", "y", "x"], "Metadata_CellLine": ["L1", "L2", "L1", "L2"]})
    with pytest.raises(CellmorphError, match=r"fold 'L1' has no training data for .*\['y'\]"):
        make_folds(df, by="Metadata_CellLine")
    with pytest.raises(CellmorphError, match="no such column"):
        make_folds(df, by="Metadata_Nope")
