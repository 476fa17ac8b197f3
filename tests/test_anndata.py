"""Profiles as AnnData (.h5ad): obs = metadata, X = features, in AnnData's on-disk format."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from cellmorph.cli import main
from cellmorph.reporting.anndata import read_h5ad_table, write_h5ad


def _profiles() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    meta = pd.DataFrame({"Metadata_Plate": ["P1", "P1", "P2"], "Metadata_Well": ["A01", "A02",
                                                                                 "A01"],
                         "Metadata_MoA": ["tubulin", None, "DMSO"], "Metadata_Count": [4, 4, 3],
                         "Metadata_Concentration": [1.0, np.nan, 0.0],
                         "Metadata_Synthetic": [True, True, True]})
    feats = pd.DataFrame(rng.random((3, 5)).astype(np.float32),
                         columns=[f"Feature_DAPI_{i:04d}" for i in range(5)])
    return pd.concat([meta, feats], axis=1)


def test_h5ad_layout_and_round_trip(tmp_path) -> None:
    df = _profiles()
    path = write_h5ad(df, tmp_path / "p.h5ad")
    with h5py.File(path) as f:
        assert f.attrs["encoding-type"] == "anndata"
        assert f["X"].shape == (3, 5) and f["X"].dtype == np.float32
        assert f["obs"].attrs["encoding-type"] == "dataframe"
        assert list(f["obs"].attrs["column-order"]) == [c for c in df.columns
                                                        if c.startswith("Metadata_")]
        assert f["obs"]["Metadata_MoA"].attrs["encoding-type"] == "categorical"
        assert list(f["obs"]["Metadata_MoA"]["codes"][()]) == [1, -1, 0]  # None -> -1
        assert [v.decode() for v in f["var"]["_index"][()]] == list(df.columns[-5:])
    back = read_h5ad_table(path)
    np.testing.assert_array_equal(back.iloc[:, -5:].to_numpy(), df.iloc[:, -5:].to_numpy())
    assert list(back["Metadata_Plate"]) == ["P1", "P1", "P2"]


# anndata needs pandas < 3 on Python 3.11, which the project's lock excludes: the exported files
# are read by the real anndata in a second environment (.ci/run makes it from
# requirements-anndata.lock), compared with what was written.
ANNDATA_PYTHON = Path(os.environ.get("CELLMORPH_ANNDATA_PYTHON",
                                     Path(__file__).parents[1] / ".venv-anndata/bin/python"))
_READ_WITH_ANNDATA = """
import json, sys
import anndata, numpy as np
adata = anndata.read_h5ad(sys.argv[1])
np.save(sys.argv[2] + ".X.npy", np.asarray(adata.X))
adata.obs.to_csv(sys.argv[2] + ".obs.csv", index=False)
json.dump({"var": list(adata.var_names), "obs_names": list(adata.obs_names),
           "dtypes": {c: str(t) for c, t in adata.obs.dtypes.items()},
           "version": anndata.__version__}, open(sys.argv[2] + ".json", "w"))
"""


def read_with_anndata(path: Path, out: Path) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """X, obs and names of an .h5ad file as the real anndata reads them."""
    if not ANNDATA_PYTHON.is_file():
        pytest.skip(f"no anndata environment at {ANNDATA_PYTHON}: python3 -m venv .venv-anndata "
                    "&& .venv-anndata/bin/pip install -r requirements-anndata.lock")
    subprocess.run([str(ANNDATA_PYTHON), "-c", _READ_WITH_ANNDATA, str(path), str(out)],
                   check=True, capture_output=True, text=True, timeout=300)
    return (np.load(f"{out}.X.npy"), pd.read_csv(f"{out}.obs.csv"),
            json.loads(Path(f"{out}.json").read_text()))


def test_anndata_reads_what_was_written(tmp_path) -> None:
    df = _profiles()
    X, obs, info = read_with_anndata(write_h5ad(df, tmp_path / "p.h5ad"), tmp_path / "read")
    features = [c for c in df.columns if c.startswith("Feature_")]
    np.testing.assert_array_equal(X, df[features].to_numpy())
    assert X.dtype == np.float32
    assert info["var"] == features
    meta = [c for c in df.columns if c.startswith("Metadata_")]
    assert list(obs.columns) == meta
    assert info["dtypes"]["Metadata_MoA"] == "category"
    pd.testing.assert_frame_equal(obs, df[meta], check_dtype=False)


def test_anndata_reads_an_exported_profile_run(tiny021, tmp_path) -> None:
    from cellmorph import api

    result = api.profile(index=tiny021, output=tmp_path / "run", h5ad=True, progress=False,
                         precision="fp32",
                         preprocess={"grid": [1, 1], "tile_size": 32, "drop_empty": False})
    X, obs, info = read_with_anndata(tmp_path / "run" / "profiles_well.h5ad", tmp_path / "w")
    features = [c for c in result.wells.columns if c.startswith("Feature_")]
    np.testing.assert_array_equal(X, result.wells[features].to_numpy(np.float32))
    assert info["var"] == features
    assert list(obs["Metadata_Well"]) == list(result.wells["Metadata_Well"])
    assert list(obs["Metadata_Compound"]) == list(result.wells["Metadata_Compound"])


def test_export_command(tmp_path) -> None:
    _profiles().to_parquet(tmp_path / "wells.parquet")
    assert main(["export", str(tmp_path / "wells.parquet"), "-o", str(tmp_path / "w.h5ad")]) == 0
    assert read_h5ad_table(tmp_path / "w.h5ad").shape == (3, 11)
    assert main(["export", str(tmp_path / "wells.parquet"), "-o", str(tmp_path / "w.csv")]) == 2
