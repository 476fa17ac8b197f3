"""The common index machinery: validation, path checks, summaries."""

from __future__ import annotations

import pandas as pd
import pytest

from cellmorph import schema as sc
from cellmorph.datasets import index as ix
from cellmorph.errors import CellmorphError


def _platemap(tmp_path, n=3, make_files=True) -> pd.DataFrame:
    rows = []
    for i in range(n):
        paths = {}
        for ch in ("A", "B"):
            p = tmp_path / f"f{i}_{ch}.tif"
            if make_files:
                p.write_bytes(b"x")
            paths[sc.path_column(ch)] = p.name
        rows.append({sc.PLATE: "P1", sc.WELL: f"b{i + 1}", sc.SITE: 1, sc.COMPOUND: "c",
                     sc.CONCENTRATION: "1", sc.MOA: "m", sc.ROLE: sc.ROLE_TREATMENT, **paths})
    return pd.DataFrame(rows)


def test_build_index_normalises_and_resolves(tmp_path) -> None:
    df = ix.build_index(_platemap(tmp_path), ["A", "B"], root=tmp_path)
    assert list(df[sc.WELL]) == ["B01", "B02", "B03"]
    assert df[sc.TREATMENT].iloc[0] == "c@1"
    assert df[sc.BATCH].iloc[0] == "P1"  # batch defaults to plate
    assert all(str(tmp_path) in p for p in df["Path_A"])


def test_missing_files_are_reported_together(tmp_path) -> None:
    with pytest.raises(CellmorphError) as err:
        ix.build_index(_platemap(tmp_path, n=4, make_files=False), ["A", "B"], root=tmp_path)
    assert "(8 of 8 files missing)" in str(err.value)
    assert str(err.value).count(".tif") == 1  # the first named, with its row and column
    assert "row 0, column Path_A: image file" in str(err.value)
    assert "BBBC021" not in str(err.value)  # no hint for a screen the user did not index
    assert "\n" not in str(err.value)


def test_a_missing_image_in_a_plate_map_names_its_line(tmp_path) -> None:
    """The first missing file is named by the plate map's own line and column."""
    from cellmorph.datasets.platemap import index_platemap

    pm = _platemap(tmp_path, n=3)
    pm = pm.rename(columns={"Path_A": "path_A", "Path_B": "path_B"})
    (tmp_path / pm["path_B"].iloc[1]).unlink()
    pm.drop(columns=[sc.ROLE]).to_csv(tmp_path / "pm.csv", index=False)
    with pytest.raises(CellmorphError, match=r"pm\.csv: line 3, column Path_B: image file .* not "
                                             r"found \(1 of 6 files missing\); check the path in "
                                             r"that row, or --root"):
        index_platemap(tmp_path / "pm.csv", root=tmp_path)


def test_missing_column_and_empty_selection(tmp_path) -> None:
    pm = _platemap(tmp_path)
    with pytest.raises(CellmorphError, match=r"missing columns \['Path_C'\]"):
        ix.build_index(pm, ["A", "C"], root=tmp_path)
    with pytest.raises(CellmorphError, match="selection is empty"):
        ix.build_index(pm.iloc[:0], ["A"], root=tmp_path)


def test_bad_rows_are_named(tmp_path) -> None:
    pm = _platemap(tmp_path)
    pm.loc[1, sc.WELL] = "ZZ"
    with pytest.raises(CellmorphError, match="row 1: not a well name"):
        ix.build_index(pm, ["A"], root=tmp_path)
    pm = _platemap(tmp_path)
    pm.loc[2, sc.CONCENTRATION] = "high"
    with pytest.raises(CellmorphError, match="row 2: Metadata_Concentration is 'high'"):
        ix.build_index(pm, ["A"], root=tmp_path)
    pm = _platemap(tmp_path)
    pm.loc[2, sc.WELL] = "B01"
    with pytest.raises(CellmorphError, match="row 0 and row 2 are both plate P1, well B01, "
                                             "site 1"):
        ix.build_index(pm, ["A"], root=tmp_path)
    pm = _platemap(tmp_path)
    pm.loc[1, sc.MOA] = None
    with pytest.raises(CellmorphError, match="row 1: compound 'c' has no MoA label"):
        ix.build_index(pm, ["A"], root=tmp_path)


@pytest.mark.parametrize(("raw", "norm"), [("a1", "A01"), ("B02", "B02"), ("h012", "H12"),
                                           ("AA3", "AA03")])
def test_normalise_well(raw: str, norm: str) -> None:
    assert ix.normalise_well(raw) == norm


def test_read_index_rejects_other_tables(tmp_path) -> None:
    path = tmp_path / "x.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(CellmorphError, match="not a cellmorph index"):
        ix.read_index(path)
