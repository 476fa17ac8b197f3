"""CellProfiler LoadData CSVs (JUMP-style) with a separate treatment table: index, then
profile, like any other index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellmorph import schema as sc
from cellmorph.api import profile
from cellmorph.atomic import write_parquet
from cellmorph.datasets.loaddata import index_loaddata
from cellmorph.errors import CellmorphError

CHANNELS = ("OrigDNA", "OrigAGP", "OrigMito")
LAYOUT = {"A01": ("DMSO", None, np.nan), "A02": ("DMSO", None, np.nan),
          "B01": ("BRD-1", "tubulin", 1.0), "B02": ("BRD-2", "tubulin", 3.0),
          "C01": ("BRD-3", "kinase", 1.0), "C02": ("BRD-4", "kinase", 10.0),
          "D01": ("BRD-5", None, 5.0)}


def _screen(tmp_path: Path) -> tuple[Path, Path]:
    """Two plates, two sites a well, as CellProfiler's LoadData wants them: metadata first,
    then FileName_/PathName_ pairs, absolute folders, and illumination functions."""
    rng = np.random.default_rng(0)
    rows = []
    for plate in ("BR00117035", "BR00117036"):
        folder = tmp_path / "images" / plate
        folder.mkdir(parents=True)
        for well in LAYOUT:
            for site in (1, 2):
                row = {"Metadata_Source": "source_4", "Metadata_Plate": plate,
                       "Metadata_Well": well, "Metadata_Site": site}
                for ch in CHANNELS:
                    name = f"r{well[0]}c{well[1:]}f0{site}p01-{ch}.tiff"
                    tifffile.imwrite(folder / name,
                                     rng.integers(0, 4000, (48, 64)).astype(np.uint16))
                    row[f"FileName_{ch}"] = name
                    row[f"PathName_{ch}"] = str(folder)
                for ch in ("IllumDNA",):
                    row[f"FileName_{ch}"] = f"{plate}_{ch}.npy"
                    row[f"PathName_{ch}"] = str(tmp_path / "illum")
                rows.append(row)
    load_data = tmp_path / "load_data.csv"
    pd.DataFrame(rows).to_csv(load_data, index=False)
    platemap = tmp_path / "platemap.csv"
    pd.DataFrame([{"well_position": w, "broad_sample": c, "moa": m, "mmoles_per_liter": x}
                  for w, (c, m, x) in LAYOUT.items()]).to_csv(platemap, index=False)
    return load_data, platemap


def test_loaddata_with_a_treatment_table(tmp_path: Path) -> None:
    load_data, platemap = _screen(tmp_path)
    df = index_loaddata(load_data, treatments=platemap)
    assert sc.channels_of(df) == list(CHANNELS)  # illumination functions left out
    assert len(df) == 2 * len(LAYOUT) * 2
    roles = df.groupby(sc.WELL)[sc.ROLE].first().to_dict()
    assert roles["A01"] == sc.ROLE_CONTROL and roles["B01"] == sc.ROLE_TREATMENT
    assert roles["D01"] == sc.ROLE_UNLABELLED
    assert (df.loc[df[sc.ROLE] == sc.ROLE_CONTROL, sc.CONCENTRATION] == 0).all()
    assert set(df[sc.COMPOUND]) >= {"DMSO", "BRD-1"} and set(df[sc.MOA].dropna()) == {
        "DMSO", "tubulin", "kinase"}
    assert Path(df["Path_OrigDNA"].iloc[0]).is_file()
    # The index profiles like any other.
    index = write_parquet(df, tmp_path / "index.parquet")
    result = profile(index=index, output=tmp_path / "run", progress=False, precision="fp32",
                     preprocess={"grid": [1, 1], "tile_size": 32, "drop_empty": False})
    assert len(result.wells) == 2 * len(LAYOUT)
    assert sum(c.startswith("Feature_OrigAGP_") for c in result.wells.columns) == 1280


def test_loaddata_errors(tmp_path: Path) -> None:
    load_data, platemap = _screen(tmp_path)
    with pytest.raises(CellmorphError, match="no treatment column"):
        index_loaddata(load_data)
    partial = tmp_path / "partial.csv"
    pd.read_csv(platemap).iloc[:-1].to_csv(partial, index=False)
    with pytest.raises(CellmorphError, match=r"4 images have no treatment in .*partial\.csv "
                                             r"\(first: \['BR00117035', 'D01'\]\)"):
        index_loaddata(load_data, treatments=partial)
    broken = tmp_path / "broken.csv"
    pd.read_csv(load_data).drop(columns=["PathName_OrigMito"]).to_csv(broken, index=False)
    with pytest.raises(CellmorphError, match="FileName_OrigMito has no PathName_OrigMito"):
        index_loaddata(broken, treatments=platemap)
