"""A user's own screen through a plate-map CSV, with any number of stains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellmorph import schema as sc
from cellmorph.datasets.platemap import index_platemap
from cellmorph.errors import CellmorphError

STAINS = ("hoechst", "conA", "syto14", "mito")


def _screen(tmp_path, label_gap=False):
    rows = []
    for w, (compound, conc, label) in enumerate([("DMSO", 0, None), ("cpdA", 1, "tox"),
                                                 ("cpdB", 2, None), ("cpdA", 3, "tox")]):
        for site in (1, 2):
            paths = {}
            for s in STAINS:
                name = f"img/w{w}_s{site}_{s}.tif"
                (tmp_path / "img").mkdir(exist_ok=True)
                tifffile.imwrite(tmp_path / name, np.zeros((8, 8), np.uint16))
                paths[f"path_{s}"] = name
            rows.append({"Plate": "P1", "Well": f"C{w + 1}", "Site": site, "Compound": compound,
                         "Concentration": conc, "Label": label, "Batch": "b1", **paths})
    df = pd.DataFrame(rows)
    if label_gap:
        df.loc[df["Compound"] == "cpdA", "Label"] = ["tox", "tox", None, "tox"]
    path = tmp_path / "plate_map.csv"
    df.to_csv(path, index=False)
    return path


def test_platemap_with_four_stains(tmp_path) -> None:
    df = index_platemap(_screen(tmp_path))
    assert sc.channels_of(df) == list(STAINS)  # the user's spelling (conA stays conA)
    assert len(df) == 8
    roles = df.groupby(sc.COMPOUND)[sc.ROLE].first().to_dict()
    assert roles == {"DMSO": sc.ROLE_CONTROL, "cpdA": sc.ROLE_TREATMENT,
                     "cpdB": sc.ROLE_UNLABELLED}
    assert df[sc.WELL].iloc[0] == "C01"
    assert all((tmp_path / "img").as_posix() in p for p in df["Path_hoechst"])
    assert "Path_conA" in df.columns


def test_controls_only_and_warnings_of_slips(tmp_path, caplog) -> None:
    path = _screen(tmp_path)
    table = pd.read_csv(path)
    table[table["Compound"] == "DMSO"].to_csv(path, index=False)
    controls = index_platemap(path)  # a map of controls only is a valid screen to profile
    assert set(controls[sc.ROLE]) == {sc.ROLE_CONTROL}
    table.loc[table["Well"] == "C4", "Label"] = "other"  # cpdA: two MoA labels
    table.loc[1, "path_mito"] = table.loc[0, "path_mito"]  # one file for two fields
    table.to_csv(path, index=False)
    index_platemap(path)
    assert "compound 'cpdA' has 2 MoA labels (other, tox)" in caplog.text
    assert "2 fields share image files in Path_mito (first: w0_s1_mito.tif at line 2, line 3)" \
        in caplog.text


def test_platemap_errors(tmp_path) -> None:
    with pytest.raises(CellmorphError, match="compound 'cpdA' has no label here"):
        index_platemap(_screen(tmp_path, label_gap=True))
    path = _screen(tmp_path)
    pd.read_csv(path).drop(columns=["Site"]).to_csv(path, index=False)
    with pytest.raises(CellmorphError, match=r"missing columns \['site'\]"):
        index_platemap(path)
    pd.read_csv(path).drop(columns=[f"path_{s}" for s in STAINS]).to_csv(path, index=False)
    with pytest.raises(CellmorphError, match="no path_<stain> columns"):
        index_platemap(path)
