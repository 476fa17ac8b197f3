"""Atomic output writing: an interrupted command leaves the old file or none, never half."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from cellmorph.errors import CellmorphError

LOCK = ".cellmorph.lock"
_LOCKS: dict[Path, FileLock] = {}


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` (and parents) or raise a clear error if it cannot be written to."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CellmorphError(
            f"cannot create output folder {path}: {exc.strerror}; choose a writable location"
        ) from exc
    if not os.access(path, os.W_OK):
        raise CellmorphError(f"output folder {path} is not writable; choose a writable location")
    return path


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The file gets the usual mode (0666 less the umask, 0644 under umask 022). A full disk or
    another write failure becomes one clear error naming ``path``.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as exc:
        raise CellmorphError(_write_error(path, exc)) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _write_error(path: Path, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc):
        return (f"no space left on the device while writing {path}; free some space or "
                "choose another output folder, then rerun (finished parts are kept)")
    return f"cannot write {path}: {exc.strerror or exc}; choose a writable location"


@functools.cache
def _umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it races)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def folder_lock(folder: Path | str, *, wait: bool = False) -> Iterator[None]:
    """Hold ``folder``'s lock file while writing there (re-entrant within this process).

    The lock is an OS file lock: a killed process releases it, so it never stays stuck. A
    second process waits (``wait``) or is refused with a clear error.
    """
    folder = Path(folder).resolve()
    lock = _LOCKS.setdefault(folder, FileLock(folder / LOCK, is_singleton=True))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        raise CellmorphError(f"another cellmorph run is writing to {folder} (lock {LOCK}); "
                             "wait for it to finish or choose another output folder") from None
    try:
        yield
    finally:
        lock.release()


def remove_partial_files(folder: Path | str, *, skip: tuple[str, ...] = ()) -> int:
    """Delete ``*.part`` files (unfinished atomic writes of a killed process) under ``folder``,
    except inside the top-level subfolders named in ``skip``; returns how many."""
    folder = Path(folder)
    removed = 0
    for part in folder.rglob("*.part"):
        relative = part.relative_to(folder).parts
        if part.is_file() and not (len(relative) > 1 and relative[0] in skip):
            part.unlink(missing_ok=True)
            removed += 1
    return removed


def write_parquet(df: pd.DataFrame, path: Path | str) -> Path:
    """Write a table to Parquet atomically.

    Wide numeric tables (thousands of feature columns) go to Arrow straight from one NumPy
    block: pandas converts column by column, several times slower for profile tables.
    """
    table = to_arrow(df)
    # Dictionaries and statistics help the metadata columns only; for thousands of feature
    # columns they cost most of the write.
    metadata = [n for n, t in zip(table.column_names, table.schema.types, strict=True)
                if not pa.types.is_floating(t)]
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, use_dictionary=metadata, write_statistics=metadata)
    return Path(path)


def to_arrow(df: pd.DataFrame) -> pa.Table:
    """An Arrow table of ``df`` (no index); float columns converted a block at a time."""
    dtypes = dict(zip(df.columns, df.dtypes, strict=True)) if df.columns.is_unique else {}
    floats = {c for c, t in dtypes.items() if t in (np.float32, np.float64)}
    if len(floats) < 64:
        return pa.Table.from_pandas(df, preserve_index=False)
    rest = [c for c in df.columns if c not in floats]
    head = pa.Table.from_pandas(df[rest], preserve_index=False) if rest else None
    arrays: dict[str, pa.Array] = {}
    for dtype in (np.float32, np.float64):
        cols = [c for c in df.columns if c in floats and dtypes[c] == dtype]
        if cols:
            block = np.ascontiguousarray(df[cols].to_numpy(dtype).T)
            arrays.update({str(c): pa.array(block[i]) for i, c in enumerate(cols)})
    columns = [arrays[str(c)] if c in floats else head.column(str(c)) for c in df.columns]
    return pa.Table.from_arrays(columns, names=[str(c) for c in df.columns])


def write_csv(df: pd.DataFrame, path: Path | str) -> Path:
    """Write a table to CSV atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def write_npy(array: np.ndarray, path: Path | str) -> Path:
    """Write a NumPy array (``.npy``) atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)
    return Path(path)


def write_text(text: str, path: Path | str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(obj: Any, path: Path | str) -> Path:
    """Write JSON atomically (NaN written as null)."""
    return write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n", path)


def _jsonable(obj: Any) -> Any:
    import math

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
