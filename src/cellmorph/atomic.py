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
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise CellmorphError(f"output folder {path} exists and is not a folder; choose a "
                             "folder name")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CellmorphError(
            f"cannot create output folder {path}: {exc.strerror}; choose a writable location"
        ) from exc
    if not os.access(path, os.W_OK):
        raise CellmorphError(f"output folder {path} is not writable; choose a writable location")
    return path


# Temporary files of atomic writes carry this suffix (and a leading dot, the target's name and
# a random part), so that the clean-up of a killed run removes only files this program made,
# never a user's own ``*.part`` file (a browser's or a download manager's).
PART_SUFFIX = ".cellmorph.part"


def is_partial(path: Path) -> bool:
    """True for the name of an unfinished atomic write of this program (a killed process's)."""
    return path.name.startswith(".") and path.name.endswith(PART_SUFFIX)


def partial_path(path: Path | str) -> Path:
    """A fixed temporary name beside ``path`` for a file written in place before a rename."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{PART_SUFFIX}")


def writable_target(path: Path | str) -> Path:
    """The file an output named ``path`` is written to, refused with a clear error when it is
    not a regular file or a new name.

    A symbolic link is written through: the file it points to is replaced and the link stays
    (a dangling link is refused). A FIFO, a device, a socket or a folder is refused, never
    replaced by a regular file.
    """
    path = Path(path)
    target = path
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            raise CellmorphError(f"{path} is a symbolic link to {target}, which does not exist; "
                                 "give another output name")
    if target.exists() and not target.is_file():
        what = "a folder" if target.is_dir() else "not a regular file (a FIFO, device or socket)"
        raise CellmorphError(f"{path} is {what}; give the name of a regular file to write")
    return target


def check_not_input(output: Path | str, *inputs: Path | str | None, flag: str = "-o") -> None:
    """Refuse an output that is one of a command's inputs (the input would be destroyed)."""
    out = Path(output)
    if not out.exists():
        return
    for source in inputs:
        if source is not None and Path(source).exists() and out.resolve() == Path(
                source).resolve():
            raise CellmorphError(f"{flag} {output} is an input of this command; choose another "
                                 "output name")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The file gets the usual mode (0666 less the umask, 0644 under umask 022). A full disk or
    another write failure becomes one clear error naming ``path``; an existing ``path`` that
    is not a regular file is refused (see :func:`writable_target`).
    """
    path = writable_target(path)
    ensure_writable_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise CellmorphError(_write_error(path, exc)) from None
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


def remove_partial_files(folder: Path | str, *, recursive: bool = True,
                         skip: tuple[str, ...] = ()) -> int:
    """Delete this program's unfinished atomic writes (see :func:`is_partial`) in ``folder``
    (and its subfolders when ``recursive``, except the top-level ones named in ``skip``),
    never following a symbolic link; returns how many."""
    folder = Path(folder)
    removed = 0
    for entry in _walk(folder, recursive, skip):
        if is_partial(entry) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def _walk(folder: Path, recursive: bool, skip: tuple[str, ...]) -> Iterator[Path]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if recursive and entry.name not in skip:
                yield from _walk(path, True, ())
        else:
            yield path


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
    # The Arrow schema that Parquet keeps beside its own costs ~80 bytes a column: a third of
    # a plate's file of 3,840 features and a few rows. A profile table's columns (numbers,
    # strings, booleans) read back the same from Parquet's own types, so wide tables go
    # without it.
    wide = len(table.column_names) - len(metadata) >= 64
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, use_dictionary=metadata, write_statistics=metadata,
                       store_schema=not wide)
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
