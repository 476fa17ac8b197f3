"""A run folder belongs to one configuration, and holds nothing of anybody else's.

Before a profiling or training run writes anything, :func:`start_run` checks everything that
can be checked (device, model and weights, the index), then :func:`open_run` takes the
folder's lock and compares the *fingerprint* of what the run would compute (every setting
that changes results, as resolved; the device and precision; the index's content; the images'
sizes and modification times, per plate; the weights' identity) with the one the folder was
made with.

- A folder of the same fingerprint is resumed. One of another fingerprint is refused, naming
  what differs, unless it holds no results yet (a run that failed early claims nothing) or
  ``overwrite`` is given. For a profiling run whose images changed, the changed plates'
  results are redone.
- What a run may delete or replace is only what ``run.json`` records that cellmorph created
  there (its *manifest*: names, never patterns). A folder without a run record that already
  holds any of those names is refused, ``overwrite`` or not: cellmorph never deletes files it
  did not write, and never its own input.
- Leftovers of a killed run (this program's own ``.*.cellmorph.part`` files) are removed from
  the run's folders only; ``provenance.json`` records who ran what, where, with which
  versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import platform
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import timm

from cellmorph import schema as sc
from cellmorph.atomic import (
    LOCK,
    ensure_writable_dir,
    folder_lock,
    remove_partial_files,
    write_json,
    write_parquet,
)
from cellmorph.backbones import check_weights, default_input_size, efficientnet_lite
from cellmorph.cache import check_cell_settings, image_stamps
from cellmorph.config import RunConfig, TrainConfig, save_config, with_absolute_paths
from cellmorph.datasets.cell_locations import read_cell_locations
from cellmorph.datasets.index import read_index
from cellmorph.errors import CellmorphError
from cellmorph.executors import check_ray
from cellmorph.log import get_logger
from cellmorph.runtime import Runtime, keep_freed_memory, resolve_runtime

log = get_logger(__name__)

RUN_RECORD = "run.json"
PROVENANCE = "provenance.json"
FORMAT = 2  # bump when a run folder's layout or meaning changes


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
_NOT_RESULTS_PROFILE = _NOT_RESULTS | {"batch_size", "preprocess_workers", "keep_cache"}
_NOT_RESULTS_TRAIN = _NOT_RESULTS | {"folds", "seeds", "report_level", "confidences",
                                     "conformal_scheme", "keep_models", "refit"}


# Settings whose resolved value stands elsewhere in the fingerprint: the index's content (not
# its path), the weights' identity (not a file's path), the resolved device and precision.
_RESOLVED_ELSEWHERE = {"index", "weights", "device", "precision"}
# Training settings that only fill in the preset: the resolved optimisation settings count.
_HYPER_SETTINGS = {"preset", "epochs", "batch_size", "lr", "weight_decay", "label_smoothing",
                   "class_balanced"}


# Settings added after run folders were made, at the values that do what runs did before:
# left out of the fingerprint there, so that such a folder still resumes.
_LATER_SETTINGS = {"train": {"label": "moa", "controls": "exclude", "sampling": "shuffle"},
                   "profile": {"fold_models": None, "fold_by": "Metadata_Compound",
                               "qc": {"drop": [], "threshold": 3.5}}}


def fingerprint(config: RunConfig, kind: str, runtime: dict, index_digest: str,
                images: dict[str, str] | None = None,
                cell_locations: pd.DataFrame | None = None) -> dict:
    """Everything that decides the numbers of a ``profile`` or ``train`` run, as resolved (an
    index given by another path or a value equal to the preset's default is the same run;
    cell locations count by their values, not their file's path)."""
    skip = (_NOT_RESULTS_PROFILE if kind == "profile" else _NOT_RESULTS_TRAIN) | \
        _RESOLVED_ELSEWHERE
    later = _LATER_SETTINGS.get(kind, {})
    settings = {k: v for k, v in config.model_dump(mode="json").items()
                if k not in skip and (k not in later or v != later[k])}
    model, weights = config.model, config.weights
    settings["preprocess"]["tile_size"] = config.preprocess.input_size(default_input_size(model))
    cells = settings["preprocess"]["cells"]
    cells.pop("location_images")
    cells["locations"] = None if cell_locations is None else table_digest(cell_locations)
    if settings.get("fold_models"):  # fold models count by their content, as weights do
        settings["fold_models"] = {k: weights_identity(model, v)
                                   for k, v in settings["fold_models"].items()}
    if isinstance(config, TrainConfig):
        settings = {k: v for k, v in settings.items() if k not in _HYPER_SETTINGS}
        settings["hyper"] = dataclasses.asdict(config.hyper())
    return {"settings": settings, "device": str(runtime.get("device", "")).split(":")[0],
            "precision": runtime.get("precision"), "index": index_digest,
            "images": images or {}, "weights": weights_identity(model, weights)}


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


def _differences(old: dict, new: dict, path: tuple[str, ...] = ()) -> list[tuple]:
    """``(key path, value in the folder, value now)`` for every setting that differs."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, (*path, key))
        elif a != b:
            diffs.append(((*path, key), a, b))
    return diffs


def _describe(diffs: list[tuple]) -> str:
    """The first few differences, in words."""
    text = [f"the images of plate {keys[1]} changed (size or modification time)"
            if keys[0] == "images" else
            f"{'.'.join(keys)}: {_short(a)} (in the folder) -> {_short(b)} (now)"
            for keys, a, b in diffs[:3]]
    return "; ".join(text) + ("; ..." if len(diffs) > 3 else "")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class RunLayout:
    """What a kind of run (and the commands that write into its folder afterwards: evaluate,
    explain, report) may create at the top of its folder: names, never patterns."""

    results: tuple[str, ...]  # deleted by --overwrite; their presence means work was done
    kept: tuple[str, ...] = ("config.yaml", "index.parquet", "cache")  # ours, kept

    def claims(self, folder: Path, inputs: Sequence[Path]) -> tuple[list[str], list[str]]:
        """The (results, kept) names this run claims in ``folder``, less its own inputs."""
        own = {Path(p).absolute() for p in inputs}
        mine = [n for n in (*self.results, *self.kept) if (folder / n).absolute() not in own]
        return [n for n in mine if n in self.results], [n for n in mine if n in self.kept]


@dataclass
class Manifest:
    """The names cellmorph created in a run folder (recorded in ``run.json``)."""

    results: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @classmethod
    def from_record(cls, record: dict, layout: RunLayout, folder: Path) -> Manifest:
        """The record's manifest; a run folder of format 1 (no manifest) owned its layout."""
        if "manifest" in record:
            manifest = record["manifest"] if isinstance(record["manifest"], dict) else {}
            return cls(_top_level(manifest.get("results")), _top_level(manifest.get("kept")))
        return cls([n for n in layout.results if _present(folder / n)],
                   [n for n in layout.kept if _present(folder / n)])

    def names(self) -> list[str]:
        """Every recorded name."""
        return [*self.results, *self.kept]

    def add(self, results: Sequence[str], kept: Sequence[str]) -> None:
        """Record more names (in order, once each)."""
        self.results += [n for n in results if n not in self.results]
        self.kept += [n for n in kept if n not in self.kept]


def _top_level(names: object) -> list[str]:
    """The plain top-level names of a recorded list: an edited run.json cannot point a
    deletion outside its folder (no separators, no '..')."""
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and n not in ("", ".", "..")
            and "/" not in n and "\\" not in n]


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def remove_leftovers(folder: Path, manifest: Manifest) -> int:
    """Delete the unfinished files an interrupted run left: in the run folder itself and in
    the folders its manifest records (not in a tile cache, which cleans itself under its own
    lock); returns how many."""
    removed = remove_partial_files(folder, recursive=False)
    for name in manifest.names():
        path = folder / name
        if name != "cache" and path.is_dir() and not path.is_symlink():
            removed += remove_partial_files(path)
    if removed:
        log.info("removed %d unfinished file(s) of an interrupted run in %s", removed, folder)
    return removed


def _delete(folder: Path, names: Sequence[str]) -> None:
    """Delete recorded entries of a run folder (a link is removed, never followed)."""
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():  # a FIFO or device where a result was: not this program's
            log.warning("%s is not a regular file; left in place", path)


def discard(folder: Path, name: str) -> bool:
    """Delete ``name`` from a run folder, only where the folder's manifest records it (the
    run's own tile cache once its plates are done); True when deleted."""
    manifest = Manifest.from_record(_read_record(Path(folder) / RUN_RECORD), RunLayout(()),
                                    Path(folder))
    if name not in manifest.names() or not (Path(folder) / name).exists():
        return False
    _delete(Path(folder), [name])
    return True


def _image_changes(diffs: list[tuple]) -> list[str] | None:
    """The plates whose images changed, when that is the only difference (else None)."""
    if diffs and all(keys[0] == "images" and len(keys) == 2 for keys, _, _ in diffs):
        return [keys[1] for keys, _, _ in diffs]
    return None


def _holds_results(path: Path) -> bool:
    """A result file, or a result folder with anything in it (a run that failed before its
    first result leaves at most empty folders, and claims nothing by them)."""
    if path.is_dir() and not path.is_symlink():
        return any(path.iterdir())
    return _present(path)


def _claim(folder: Path, *, kind: str, fingerprint: dict, layout: RunLayout,
           inputs: Sequence[Path], overwrite: bool,
           stale: Callable[[list[str]], list[str]] | None) -> Manifest:
    """Decide whether this run may take ``folder`` (raising why not), delete what must go,
    and return the manifest to record."""
    results, kept = layout.claims(folder, inputs)
    existing = folder / RUN_RECORD
    if not existing.is_file():
        foreign = [n for n in (*results, *kept) if _present(folder / n)]
        if foreign:
            raise CellmorphError(
                f"{folder} holds {', '.join(foreign[:4])} but no cellmorph run record "
                f"({RUN_RECORD}); cellmorph deletes or replaces only files it wrote, so choose "
                "another output folder (or move those out of the way)")
        manifest = Manifest()
    else:
        old = _read_record(existing)
        if old.get("kind") != kind:
            raise CellmorphError(f"{folder} holds a {old.get('kind')} run, not a {kind} "
                                 "run; choose another output folder")
        manifest = Manifest.from_record(old, layout, folder)
        foreign = [n for n in (*results, *kept)
                   if n not in manifest.names() and _present(folder / n)]
        if foreign:
            raise CellmorphError(f"{folder} holds {', '.join(foreign[:4])}, which its run record "
                                 "does not list as cellmorph's; move them out of the way or "
                                 "choose another output folder")
        diffs = _differences(old.get("fingerprint", {}), fingerprint)
        if old.get("format") != FORMAT:
            diffs.insert(0, (("run-folder format",), old.get("format"), FORMAT))
        done = [n for n in manifest.results if _holds_results(folder / n)]
        changed_plates = _image_changes(diffs)
        if overwrite:
            _delete(folder, manifest.results)
        elif diffs and changed_plates is not None and stale is not None and done:
            log.warning("%s; those plates are profiled again", _describe(diffs))
            redo = stale(changed_plates)
            per_plate = {name.split("/")[0] for name in redo}  # plates/, cells/: kept
            _delete(folder, [*redo, *(n for n in manifest.results if n not in per_plate)])
        elif diffs and done:
            raise CellmorphError(
                f"{folder} was made with a different configuration ({_describe(diffs)}); rerun "
                "with --overwrite to start afresh there (only cellmorph's own files are "
                "deleted), or choose another output folder")
        elif diffs:
            log.info("%s holds no results yet; taken for this configuration", folder)
    manifest.add(results, kept)
    return manifest


@contextlib.contextmanager
def open_run(folder: Path | str, *, kind: str, fingerprint: dict[str, Any],
             layout: RunLayout, runtime: dict, index_digest: str, overwrite: bool = False,
             inputs: Sequence[Path] = (),
             stale: Callable[[list[str]], list[str]] | None = None) -> Iterator[Path]:
    """Take a run folder for a run described by ``fingerprint`` (see the module's text).

    ``inputs`` are the run's own input files (never claimed or deleted even where they sit
    in the folder); ``stale`` maps plates whose images changed to the recorded files that
    hold their results (profiling), which are then deleted and redone.
    """
    folder = Path(folder)
    created, locked_before = not folder.exists(), (folder / LOCK).exists()
    folder = ensure_writable_dir(folder)
    try:
        with folder_lock(folder):
            manifest = _claim(folder, kind=kind, fingerprint=fingerprint, layout=layout,
                              inputs=inputs, overwrite=overwrite, stale=stale)
            remove_leftovers(folder, manifest)
            write_json({"format": FORMAT, "kind": kind, "fingerprint": fingerprint,
                        "manifest": dataclasses.asdict(manifest), "runtime": runtime},
                       folder / RUN_RECORD)
            _append_provenance(folder / PROVENANCE, provenance(kind, runtime, index_digest))
            yield folder.absolute()  # absolute: jobs may run where the current folder differs
    except CellmorphError:
        # Refused before the run record was written: leave the folder as it was found (no
        # lock file of ours in it, or no folder at all).
        if not locked_before and not (folder / RUN_RECORD).exists():
            (folder / LOCK).unlink(missing_ok=True)
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CellmorphError(f"{path} is damaged ({exc}); move the folder aside or choose "
                             "another output folder") from None
    if not isinstance(record, dict):
        raise CellmorphError(f"{path} is not a cellmorph run record; choose another output "
                             "folder")
    return record


def run_kind(folder: Path | str) -> str | None:
    """The kind of run a folder holds (profile, train), None when it holds none."""
    try:
        return json.loads((Path(folder) / RUN_RECORD).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _append_provenance(path: Path, entry: dict) -> None:
    history: list = []
    if path.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
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
    cell_locations: pd.DataFrame | None = None  # cells.locations, read and checked


@contextlib.contextmanager
def start_run(cfg: RunConfig, *, kind: str, layout: RunLayout, overwrite: bool = False,
              check_index: Callable[[pd.DataFrame], object] | None = None,
              index_table: pd.DataFrame | None = None,
              stale: Callable[[list[str]], list[str]] | None = None,
              ) -> Iterator[StartedRun]:
    """The opening every run shares, in an order that fails early: resolve the device, load
    the model's weights, read the index (and ``check_index`` it), reach the Ray cluster, all
    before anything is written; then take the run folder (:func:`open_run`) and save the
    config in it. ``index_table`` is an index given as a table: it is saved in the run folder
    as ``cfg.index`` once the folder is taken."""
    runtime = resolve_runtime(cfg.device, cfg.precision,
                              "train" if kind == "train" else "profile", cfg.model)
    check_weights(cfg.model, cfg.weights)
    fold_models = list((getattr(cfg, "fold_models", None) or {}).values())  # profile runs
    for weights in fold_models:
        check_weights(cfg.model, weights)
    index = read_index(cfg.index if index_table is None else index_table)
    if check_index is not None:
        check_index(index)
    locations = read_locations(cfg, index)
    if getattr(cfg, "executor", "local") == "ray":
        check_ray(cfg.ray_address)
    digest = table_digest(index)
    described = {**runtime.describe(), "malloc_keeps_freed_memory": keep_freed_memory()}
    inputs = [Path(cfg.index)] if index_table is None else []
    inputs += [Path(p) for p in fold_models]
    inputs += [Path(p) for p in (cfg.preprocess.cells.locations,
                                 cfg.preprocess.cells.location_images) if p is not None]
    if cfg.cache_dir is not None:  # a cache elsewhere (shared) is not this run's to claim
        inputs.append(Path(cfg.cache_dir))
        layout = dataclasses.replace(layout, kept=tuple(k for k in layout.kept if k != "cache"))
    with open_run(cfg.output, kind=kind, overwrite=overwrite, layout=layout,
                  fingerprint=fingerprint(cfg, kind, described, digest, image_stamps(index),
                                          locations),
                  runtime=described, index_digest=digest, inputs=inputs,
                  stale=stale) as folder:
        log.info("%s run on %s", kind, runtime.summary())
        if index_table is not None:
            write_parquet(index_table, cfg.index)
        save_config(with_absolute_paths(cfg), folder / "config.yaml",
                    notes=_resolved_notes(cfg, runtime))
        yield StartedRun(folder, runtime, index, described, locations)


def _resolved_notes(cfg: RunConfig, runtime: Runtime) -> list[str]:
    """What the config's ``auto`` settings resolved to on this machine, and why (comments in
    the saved config: the setting itself stays ``auto``, so the file reruns anywhere)."""
    notes = []
    if cfg.device == "auto":
        notes.append(f"device: auto resolved to {runtime.device_name}")
    if cfg.precision == "auto":
        notes.append(f"precision: auto resolved to {runtime.precision_name} ({runtime.reason})")
    return notes


def read_locations(cfg: RunConfig, index: pd.DataFrame) -> pd.DataFrame | None:
    """The run's cell locations (``preprocess.cells.locations``), checked against the index
    and the stains before anything is written; None when nuclei are to be found."""
    pre = cfg.preprocess
    if pre.tiles != "cells":
        return None
    locations = None
    if pre.cells.locations is not None:
        locations = read_cell_locations(pre.cells.locations, pre.cells.location_images, index)
    check_cell_settings(pre, sc.channels_of(index), locations)
    return locations
