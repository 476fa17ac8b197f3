"""The BBBC021 preset on the real, bundled metadata."""

from __future__ import annotations

import pandas as pd
import pytest

from cellmorph import schema as sc
from cellmorph.datasets import bbbc021 as b21
from cellmorph.datasets import index as ix
from cellmorph.errors import CellmorphError


@pytest.fixture(scope="module")
def moa_index() -> pd.DataFrame:
    return b21.index_bbbc021(None, moa_subset=True, check_files=False)


def test_moa_subset_counts_match_the_benchmark(moa_index: pd.DataFrame) -> None:
    s = ix.summarize(moa_index)
    assert (s["images"], s["wells"], s["treatments"], s["compounds"], s["moas"]) == (
        1208, 302, 103, 38, 12)
    assert s["plates"] == 49
    assert s["batches"] == 10


def test_taxol_rule(moa_index: pd.DataFrame) -> None:
    taxol = moa_index[moa_index[sc.COMPOUND] == "taxol"]
    assert set(taxol[sc.PLATE]) == set(b21.TAXOL_PLATES)
    assert set(taxol[sc.WELL]) == set(b21.TAXOL_WELLS)
    assert sorted(taxol[sc.CONCENTRATION].unique()) == [0.3, 1.0, 3.0]
    # Positive-control taxol wells are labelled in the raw join, and dropped by the rule.
    full = b21.index_bbbc021(None, check_files=False)
    pos_ctl = full[(full[sc.COMPOUND] == "taxol") & full[sc.WELL].isin(["B11", "E02"])]
    assert len(pos_ctl) > 0 and (pos_ctl[sc.ROLE] == sc.ROLE_UNLABELLED).all()


def test_controls_are_dmso_of_the_same_plates(moa_index: pd.DataFrame) -> None:
    ctl = moa_index[moa_index[sc.ROLE] == sc.ROLE_CONTROL]
    treated = moa_index[moa_index[sc.ROLE] == sc.ROLE_TREATMENT]
    assert (ctl[sc.COMPOUND] == "DMSO").all()
    assert set(ctl[sc.PLATE]) == set(treated[sc.PLATE])


def test_index_columns(moa_index: pd.DataFrame) -> None:
    assert sc.channels_of(moa_index) == ["DAPI", "Tubulin", "Actin"]
    assert set(moa_index[sc.SITE]) == {1, 2, 3, 4}
    assert moa_index[sc.BATCH].str.match(r"^Week\d+$").all()
    row = moa_index.iloc[0]
    assert row[sc.PLATE] in row["Path_DAPI"] and "_w1" in row["Path_DAPI"]
    assert "_w2" in row["Path_Tubulin"] and "_w4" in row["Path_Actin"]


def test_missing_metadata_column_names_the_file(tmp_path) -> None:
    bad = b21.read_image_metadata().drop(columns=["Replicate"])
    path = tmp_path / "image.csv"
    bad.head(5).to_csv(path, index=False)
    with pytest.raises(CellmorphError, match=r"image\.csv: missing columns \['Replicate'\]"):
        b21.read_image_metadata(path)


def test_compound_without_moa_names_the_row(tmp_path) -> None:
    moa = b21.read_moa_metadata()
    moa.loc[3, "moa"] = None
    path = tmp_path / "moa.csv"
    moa.to_csv(path, index=False)
    with pytest.raises(CellmorphError, match=r"line 5 .*has no MoA"):
        b21.read_moa_metadata(path)


def test_unknown_plate_is_an_error() -> None:
    with pytest.raises(CellmorphError, match="unknown plate"):
        b21.index_bbbc021(None, plates=["Week99_1"], check_files=False)
