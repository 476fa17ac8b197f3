"""Profiles as AnnData files (``.h5ad``) for scverse users: obs = the ``Metadata_`` columns,
X = the features, var = the feature names.

Written with h5py following AnnData's documented on-disk format (encoding-type and
encoding-version attributes; string columns as categoricals, as ``anndata`` itself writes
them). Hand-written because the ``anndata`` package for Python 3.11 requires pandas < 3,
which this project does not use; the files read back with ``anndata.read_h5ad``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cellmorph import schema as sc
from cellmorph.atomic import atomic_path
from cellmorph.errors import CellmorphError


def _h5py():
    try:
        import h5py
    except ImportError:
        raise CellmorphError("writing .h5ad needs h5py: pip install 'cellmorph[anndata]'") from None
    return h5py


def _encode(obj, kind: str, version: str) -> None:
    obj.attrs["encoding-type"] = kind
    obj.attrs["encoding-version"] = version


def _strings(group, name: str, values) -> None:
    h5py = _h5py()
    data = np.asarray([str(v) for v in values], dtype=object)
    ds = group.create_dataset(name, data=data, dtype=h5py.string_dtype("utf-8"))
    _encode(ds, "string-array", "0.2.0")


def _column(group, name: str, values: pd.Series) -> None:
    if pd.api.types.is_bool_dtype(values) and not values.isna().any():
        ds = group.create_dataset(name, data=values.to_numpy(bool))
        _encode(ds, "array", "0.2.0")
    elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        data = values.to_numpy()
        if values.isna().any() or data.dtype == object:  # nullable integers: as floats
            data = values.to_numpy(dtype=np.float64, na_value=np.nan)
        _encode(group.create_dataset(name, data=data), "array", "0.2.0")
    else:  # strings (and anything else) as a categorical, missing values as code -1
        present = values.dropna().astype(str)
        categories = sorted(present.unique())
        position = {c: i for i, c in enumerate(categories)}
        codes = np.array([-1 if pd.isna(v) else position[str(v)] for v in values], np.int32)
        cat = group.create_group(name)
        _encode(cat, "categorical", "0.2.0")
        cat.attrs["ordered"] = False
        _strings(cat, "categories", categories)
        ds = cat.create_dataset("codes", data=codes)
        _encode(ds, "array", "0.2.0")


def _dataframe(group, index: list[str], columns: dict[str, pd.Series]) -> None:
    h5py = _h5py()
    _encode(group, "dataframe", "0.2.0")
    group.attrs["_index"] = "_index"
    group.attrs.create("column-order", data=np.asarray(list(columns), dtype=object),
                       dtype=h5py.string_dtype("utf-8"))
    _strings(group, "_index", index)
    for name, values in columns.items():
        _column(group, name, values)


def write_h5ad(profiles: pd.DataFrame, path: Path | str) -> Path:
    """Write a profile table as an AnnData ``.h5ad`` file (atomically).

    Examples
    --------
    >>> from cellmorph.api import read_profiles
    >>> write_h5ad(read_profiles("ljosa2013"), tmp / "wells.h5ad").name
    'wells.h5ad'
    """
    feats = sc.feature_columns(profiles)
    obs = profiles[sc.metadata_columns(profiles)].reset_index(drop=True)
    return _write_anndata(obs, feats, [profiles[feats].to_numpy(np.float32)], path)


def write_h5ad_parts(parts: Sequence[Path], path: Path | str) -> Path:
    """Write profile tables stored in parts (one Parquet file a plate, as a profiling run's
    per-cell tables) as one ``.h5ad``, one part in memory at a time: the metadata of every
    row first (small: obs), then each part's features into X."""
    if not parts:
        raise CellmorphError("no Parquet files to export")
    first = pq.read_schema(parts[0]).names
    meta = [c for c in first if str(c).startswith(sc.METADATA_PREFIX)]
    feats = [c for c in first if not str(c).startswith(sc.METADATA_PREFIX)]
    obs = pd.concat([pd.read_parquet(p, columns=meta) for p in parts], ignore_index=True)
    blocks = (pd.read_parquet(p, columns=feats).to_numpy(np.float32) for p in parts)
    return _write_anndata(obs, feats, blocks, path)


def _write_anndata(obs: pd.DataFrame, feats: list[str], blocks: Iterable[np.ndarray],
                   path: Path | str) -> Path:
    """The AnnData layout, atomically: X filled from ``blocks`` (rows in order, one block in
    memory at a time), obs from ``obs``'s columns, var from the feature names."""
    h5py = _h5py()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            _encode(f, "anndata", "0.1.0")
            x = f.create_dataset("X", shape=(len(obs), len(feats)), dtype=np.float32)
            _encode(x, "array", "0.2.0")
            start = 0
            for block in blocks:
                x[start:start + len(block)] = block
                start += len(block)
            _dataframe(f.create_group("obs"), [str(i) for i in range(len(obs))],
                       {c: obs[c] for c in obs.columns})
            _dataframe(f.create_group("var"), [str(c) for c in feats], {})
            for name in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
                _encode(f.create_group(name), "dict", "0.1.0")
    return Path(path)


def write_parquet_parts(parts: Sequence[Path], path: Path | str) -> Path:
    """Profile tables stored in parts concatenated into one Parquet file, one part in
    memory at a time (pyarrow's streaming writer)."""
    if not parts:
        raise CellmorphError("no Parquet files to export")
    schema = pq.read_schema(parts[0])
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for part in parts:
            writer.write_table(pq.read_table(part).cast(schema))
    return Path(path)


def read_h5ad_table(path: Path | str) -> pd.DataFrame:
    """A profile table back from an ``.h5ad`` file written by :func:`write_h5ad` (no
    ``anndata`` needed)."""
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        var = [v.decode() if isinstance(v, bytes) else v for v in f["var"]["_index"][()]]
        X = f["X"][()]
        obs = {}
        for name in f["obs"].attrs["column-order"]:
            item = f["obs"][name]
            if isinstance(item, h5py.Group):
                cats = [c.decode() if isinstance(c, bytes) else c for c in item["categories"][()]]
                codes = item["codes"][()]
                obs[name] = [cats[c] if c >= 0 else None for c in codes]
            else:
                obs[name] = item[()]
    return pd.concat([pd.DataFrame(obs), pd.DataFrame(X, columns=var)], axis=1)
