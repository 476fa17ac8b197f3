"""Profiles as AnnData (.h5ad): obs = metadata, X = features, in AnnData's on-disk format."""

from __future__ import annotations

import importlib.util

import h5py
import numpy as np
import pandas as pd
import pytest

from cellmorph.cli import main
from cellmorph.report.anndata import read_h5ad_table, write_h5ad


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


@pytest.mark.skipif(importlib.util.find_spec("anndata") is None,
                    reason="anndata is not installed (for Python 3.11 it needs pandas < 3)")
def test_anndata_reads_it(tmp_path) -> None:
    import anndata

    adata = anndata.read_h5ad(write_h5ad(_profiles(), tmp_path / "p.h5ad"))
    assert adata.shape == (3, 5)
    assert list(adata.obs["Metadata_Well"]) == ["A01", "A02", "A01"]


def test_export_command(tmp_path) -> None:
    _profiles().to_parquet(tmp_path / "wells.parquet")
    assert main(["export", str(tmp_path / "wells.parquet"), "-o", str(tmp_path / "w.h5ad")]) == 0
    assert read_h5ad_table(tmp_path / "w.h5ad").shape == (3, 11)
    assert main(["export", str(tmp_path / "wells.parquet"), "-o", str(tmp_path / "w.csv")]) == 2
