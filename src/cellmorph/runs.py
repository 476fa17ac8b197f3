"""A run folder belongs to one configuration.

Before a profiling or training run writes anything, :func:`open_run` takes the folder's lock,
compares the *fingerprint* of what the run would compute (every setting that changes results,
the resolved device and precision, the index's content and the weights' identity) with the
one the folder was made with, and refuses on a difference, naming the setting. A matching
folder is resumed; ``overwrite`` deletes the run's own files and starts afresh. Leftover
``.part`` files of a killed run are removed, and ``provenance.json`` records who ran what,
where, with which versions.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import platform
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import timm
from pydantic import BaseModel

from cellmorph.atomic import (
    ensure_writable_dir,
    folder_lock,
    remove_partial_files,
    write_json,
)
from cellmorph.backbones import check_model, efficientnet_lite
from cellmorph.config import save_config
from cellmorph.datasets.index import read_index
from cellmorph.errors import CellmorphError
from cellmorph.log import get_logger
from cellmorph.runtime import Runtime, keep_freed_memory, resolve_runtime

log = get_logger(__name__)

RUN_RECORD = "run.json"
PROVENANCE = "provenance.json"
FORMAT = 1  # bump when a run folder's layout or meaning changes


def table_digest(table: pd.DataFrame) -> str:
    """A content hash of a table (column names, order and values)."""
    h = hashlib.sha256("\x1f".join(map(str, table.columns)).encode())
    h.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def file_digest(path: Path | str, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def weights_identity(model: str, weights: str) -> str:
    """What a run's starting weights are: a name for built-in ones, a digest for a file."""
    if weights in ("random", "xavier"):
        return weights
    if weights == "imagenet":
        variant = efficientnet_lite.bundled_variant(model)
        if variant is not None:
            return f"imagenet:bundled:{efficientnet_lite.bundled_weights_path(variant).name}"
        try:
            tag = getattr(timm.models.get_pretrained_cfg(model), "tag", None) or ""
        except Exception:  # unknown models fail later, with a clear error, not here
            tag = ""
        return f"imagenet:timm:{model}.{tag}:{timm.__version__}"
    path = Path(weights)
    return f"file:{file_digest(path)}" if path.is_file() else f"file:{weights}"


# Settings that do not change a run's numbers: where things go and how fast they get there.
# For training, the folds and seeds run so far and the headline level are not part of the
# fingerprint either: each fold of each seed is computed independently of the others, so a
# run started with some folds or seeds may be extended with more.
_NOT_RESULTS = {"output", "cache_dir", "executor", "ray_address", "num_workers"}
_NOT_RESULTS_PROFILE = _NOT_RESULTS | {"batch_size", "preprocess_workers"}
_NOT_RESULTS_TRAIN = _NOT_RESULTS | {"folds", "seeds", "report_level", "confidences"}


def fingerprint(config: BaseModel, kind: str, runtime: dict, index_digest: str) -> dict:
    """Everything that decides the numbers of a ``profile`` or ``train`` run."""
    skip = _NOT_RESULTS_PROFILE if kind == "profile" else _NOT_RESULTS_TRAIN
    settings = {k: v for k, v in config.model_dump(mode="json").items() if k not in skip}
    model, weights = getattr(config, "model", ""), getattr(config, "weights", "")
    return {"settings": settings, "device": str(runtime.get("device", "")).split(":")[0],
            "precision": runtime.get("precision"), "index": index_digest,
            "weights": weights_identity(model, weights)}


def versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers."""
    out = {"python": platform.python_version()}
    for name in ("cellmorph", "torch", "timm", "numpy", "pandas", "scikit-learn", "copairs",
                 "crepes"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(kind: str, runtime: dict, index_digest: str) -> dict[str, Any]:
    """One invocation of a run: when, how, where and with what."""
    return {"kind": kind, "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "command": sys.argv, "host": platform.node(), "cpu": _cpu_model(),
            "runtime": runtime, "index_digest": index_digest, "versions": versions()}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {_short(a)} (in the folder) -> {_short(b)} (now)")
    return diffs


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def remove_leftovers(folder: Path) -> int:
    """Delete the ``.part`` files an interrupted run left in its folder (not in a tile cache,
    which cleans itself under its own lock); returns how many."""
    removed = remove_partial_files(folder, skip=("cache",))
    if removed:
        log.info("removed %d unfinished file(s) of an interrupted run in %s", removed, folder)
    return removed


def _clear(folder: Path, artifacts: Sequence[str]) -> None:
    for pattern in artifacts:
        for path in folder.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def open_run(folder: Path | str, *, kind: str, fingerprint: dict[str, Any],
             artifacts: Sequence[str], runtime: dict, index_digest: str,
             overwrite: bool = False) -> Iterator[Path]:
    """Take a run folder for a run described by ``fingerprint``.

    A folder made with another fingerprint is refused (the error names what differs) unless
    ``overwrite``, which deletes ``artifacts`` (glob patterns of the run's own files) first.
    """
    folder = ensure_writable_dir(Path(folder))
    record = {"format": FORMAT, "kind": kind, "fingerprint": fingerprint}
    with folder_lock(folder):
        existing = folder / RUN_RECORD
        has_results = any(any(folder.glob(p)) for p in artifacts if p != "config.yaml")
        if overwrite:
            _clear(folder, [*artifacts, RUN_RECORD, PROVENANCE])
        elif existing.is_file():
            old = _read_record(existing)
            if old.get("kind") != kind:
                raise CellmorphError(f"{folder} holds a {old.get('kind')} run, not a {kind} "
                                     "run; choose another output folder")
            diffs = _differences(old.get("fingerprint", {}), fingerprint)
            if old.get("format") != FORMAT:
                diffs.insert(0, f"run-folder format {old.get('format')} -> {FORMAT}")
            if diffs:
                raise CellmorphError(
                    f"{folder} was made with a different configuration ({'; '.join(diffs[:3])}"
                    f"{'; ...' if len(diffs) > 3 else ''}); rerun with --overwrite to start "
                    "afresh there, or choose another output folder")
        elif has_results:
            raise CellmorphError(f"{folder} holds results whose configuration was not recorded "
                                 "(an older cellmorph, or another tool); rerun with --overwrite "
                                 "to start afresh there, or choose another output folder")
        remove_leftovers(folder)
        write_json(record, existing)
        _append_provenance(folder / PROVENANCE, provenance(kind, runtime, index_digest))
        yield folder.absolute()  # absolute: jobs may run where the current folder differs


def _read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CellmorphError(f"{path} is damaged ({exc}); rerun with --overwrite") from None


def _append_provenance(path: Path, entry: dict) -> None:
    history: list = []
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            history = json.loads(path.read_text()).get("invocations", [])
    write_json({"latest": entry, "invocations": [*history, entry]}, path)


def read_provenance(folder: Path | str) -> dict | None:
    """The latest invocation recorded in a run folder (None if there is none)."""
    path = Path(folder) / PROVENANCE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("latest")
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class StartedRun:
    """What a profiling or training run works with once its folder is taken."""

    folder: Path
    runtime: Runtime
    index: pd.DataFrame
    described: dict  # the runtime as recorded (device, precision, native bf16)


@contextlib.contextmanager
def start_run(cfg: BaseModel, *, kind: str, artifacts: Sequence[str], overwrite: bool = False,
              check_index: Callable[[pd.DataFrame], object] | None = None,
              ) -> Iterator[StartedRun]:
    """The opening every run shares, in an order that fails early: resolve the device, check
    the model and weights, read the index (and ``check_index`` it), all before anything is
    written; then take the run folder (:func:`open_run`) and save the config in it."""
    runtime = resolve_runtime(cfg.device, cfg.precision)
    check_model(cfg.model, cfg.weights)
    index = read_index(cfg.index)
    if check_index is not None:
        check_index(index)
    digest = table_digest(index)
    described = {**runtime.describe(), "malloc_keeps_freed_memory": keep_freed_memory()}
    with open_run(cfg.output, kind=kind, overwrite=overwrite, artifacts=artifacts,
                  fingerprint=fingerprint(cfg, kind, described, digest),
                  runtime=described, index_digest=digest) as folder:
        log.info("%s run on %s", kind, runtime.summary())
        save_config(cfg, folder / "config.yaml")
        yield StartedRun(folder, runtime, index, described)
