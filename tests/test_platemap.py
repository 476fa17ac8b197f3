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
    assert sc.channels_of(df) == [s.lower() for s in STAINS]
    assert len(df) == 8
    roles = df.groupby(sc.COMPOUND)[sc.ROLE].first().to_dict()
    assert roles == {"DMSO": sc.ROLE_CONTROL, "cpdA": sc.ROLE_TREATMENT,
                     "cpdB": sc.ROLE_UNLABELLED}
    assert df[sc.WELL].iloc[0] == "C01"
    assert all((tmp_path / "img").as_posix() in p for p in df["Path_hoechst"])


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
