"""Cross-validated fine-tuning: resumable fold jobs over replicate seeds.

The unit of work is a :class:`FoldJob`: one fold of one seed, holding everything it needs
(paths, positions, settings) so that it can run in this process, another process or on
another machine. :func:`run_folds` runs them one after the other; scoring the predictions is
:mod:`cellmorph.evaluation.cv_scores`'s job.

Run folder::

    OUTPUT/config.yaml                 the whole run, as given
    OUTPUT/seed<S>/init.safetensors    the initial weights every fold starts from
    OUTPUT/seed<S>/folds/<fold>/       model.safetensors, history.json, epoch_probs.npy,
                                       queries.parquet (the unlabelled crops, where the
                                       screen has some), predictions.parquet
    OUTPUT/seed<S>/novelty/<MoA>/      the same for a fold trained without one MoA (first
                                       seed, ``novelty: true``)

A fold's ``predictions.parquet`` is written last and marks it done: a rerun skips it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from safetensors.torch import save as safetensors_bytes

from cellmorph import schema as sc
from cellmorph.atomic import (
    atomic_path,
    ensure_writable_dir,
    partial_path,
    write_json,
    write_npy,
    write_parquet,
)
from cellmorph.backbones import create_backbone, default_input_size
from cellmorph.backbones.model_input import make_input_spec
from cellmorph.backbones.trunk import freeze, n_stages, split_model
from cellmorph.cache import TileCache, TileStore, build_tile_cache, safe_name
from cellmorph.config import TrainConfig
from cellmorph.errors import CellmorphError
from cellmorph.executors import map_tasks
from cellmorph.log import get_logger, progress
from cellmorph.records import ShortRepr
from cellmorph.runs import RunLayout, file_digest, start_run
from cellmorph.runtime import Runtime, keep_freed_memory, runtime_from_names
from cellmorph.training.folds import Fold, make_folds
from cellmorph.training.trainer import FoldTrainer, compute_trunk_cache

log = get_logger(__name__)
QUERIES_FILE = "queries.parquet"  # a fold model's probabilities for the unlabelled crops


@dataclass(repr=False)
class FoldOutput(ShortRepr):
    """What one fold produced: crop-level test predictions and per-epoch history."""

    name: str
    predictions: pd.DataFrame  # Metadata_* of each test crop, Metadata_Fold, Prob_<class>
    epoch_probs: np.ndarray  # (epochs, test crops, classes)
    train_loss: list[float]
    queries: pd.DataFrame | None = None  # the unlabelled crops, as the fold's model sees them


@dataclass(repr=False)
class SeedRun(ShortRepr):
    """The folds of one replicate seed, in fold order."""

    seed: int
    folder: Path
    folds: list[FoldOutput]
    refit: FoldOutput | None = None  # the model of every labelled compound (refit: true)


@dataclass(repr=False)
class TrainingRun(ShortRepr):
    """The fold outputs of every seed of a run, and what the run was."""

    config: TrainConfig
    classes: list[str]
    folds_total: int
    seeds: list[SeedRun] = field(default_factory=list)
    runtime: dict[str, str | bool] = field(default_factory=dict)
    trained: str = ""  # which layers were trained, in words
    novelty: SeedRun | None = None  # leave-one-MoA-out folds of the first seed
    rows: int = 0  # crops that train in some fold
    plates: int = 0  # plates those crops come from
    synthetic: bool = False  # made from SYNTHETIC images


@dataclass(frozen=True)
class FoldJob:
    """One fold of one seed: everything it needs, picklable."""

    config: TrainConfig
    seed: int
    fold: str
    train: np.ndarray  # positions in the tile store
    test: np.ndarray
    classes: tuple[str, ...]
    cache_folder: Path
    init_weights: Path
    output: Path
    trunk_cache: Path | None = None
    device: str = "cpu"  # resolved by the driver, so every worker computes alike
    precision: str = "fp32"
    keep_model: bool = True  # write model.safetensors (explain reads it; resuming does not)
    queries: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # unlabelled

    @property
    def done(self) -> bool:
        """True when the fold's predictions are on disk (a rerun skips it), its queries' too
        where the screen has unlabelled crops (a fold of an older run that lacks them runs
        again: its model is not kept for every fold)."""
        return (self.output / "predictions.parquet").is_file() and (
            not len(self.queries) or (self.output / QUERIES_FILE).is_file())


def trained_layers(cfg: TrainConfig) -> str:
    """Which layers a run trains, in words (for the summary and comparisons)."""
    how = ", trunk cached" if cfg.cached_trunk else ""
    if cfg.freeze_stages == 0:
        return "the whole network"
    if cfg.freeze_stages == "all":
        return f"the classifier only (a linear probe on frozen pooled features{how})"
    total = stage_count(cfg.model)
    trained = (f"stage {total}" if cfg.freeze_stages + 1 == total
               else f"stages {cfg.freeze_stages + 1}-{total}")
    return f"{trained} and the head (stem and stages 1-{cfg.freeze_stages} frozen{how})"


@functools.cache
def stage_count(model: str) -> int:
    """Feature stages of a timm architecture, counted on a weightless copy (the meta device
    allocates nothing, so a report does not build a whole network to say what was trained)."""
    with torch.device("meta"):
        return n_stages(create_backbone(model, "random", num_classes=2))


def fold_seed(seed: int, fold: str) -> int:
    """A per-fold seed that does not depend on which folds ran before (resumable)."""
    return zlib.crc32(f"{seed}/{fold}".encode())


NOVELTY_FOLDS = "novelty"  # the leave-one-MoA-out folds' folder inside a seed's folder
REFIT = "refit"  # the refitted model's 'fold' (every labelled compound, no test) and folder


def fold_dir(seed_folder: Path, name: str, kind: str = "folds") -> Path:
    """The folder of fold ``name`` inside a seed's folder (``kind``: folds or novelty)."""
    # The hash keeps names apart that sanitise to the same string.
    return seed_folder / kind / f"{safe_name(name)}-{zlib.crc32(name.encode()) & 0xFFFF:04x}"


WEAK_FOLD = "all"  # the one 'fold' of a weakly supervised run: every trainable crop, no test
LABEL_COLUMNS = {"moa": sc.MOA, "compound": sc.COMPOUND, "treatment": sc.TREATMENT}


def trainable_rows(table: pd.DataFrame, cfg: TrainConfig) -> np.ndarray:
    """Which rows (tiles or fields) can train: labelled treatments for MoA labels; with a
    weak label every treated row, labelled or not, and the controls when they are a class."""
    if not cfg.weak_label:
        return sc.is_treatment(table).to_numpy()
    if cfg.controls == "class":
        return np.ones(len(table), bool)
    return ~sc.is_control(table).to_numpy()


def label_values(table: pd.DataFrame, cfg: TrainConfig) -> np.ndarray:
    """Every row's label as text, from the column ``cfg.label`` names (a weak label never
    reads ``Metadata_MoA``)."""
    return table[LABEL_COLUMNS[cfg.label]].astype(str).to_numpy()


def store_labels(table: pd.DataFrame, classes: Sequence[str], cfg: TrainConfig) -> np.ndarray:
    """Class index of every tile in the store; -1 for tiles that do not train."""
    position = {c: i for i, c in enumerate(classes)}
    rows, values = trainable_rows(table, cfg), label_values(table, cfg)
    return np.array([position[v] if r else -1 for v, r in zip(values, rows, strict=True)])


def plate_balanced_weights(labels: np.ndarray, plates: np.ndarray) -> np.ndarray:
    """A draw probability per training crop: every label weighs the same and, within a label,
    every plate it is on, whatever their crop counts (a network then gains nothing by
    learning which plate a crop came from)."""
    key = pd.DataFrame({"label": labels, "plate": plates})
    per_group = key.groupby(["label", "plate"])["label"].transform("size").to_numpy()
    plates_per_label = key.groupby("label")["plate"].transform("nunique").to_numpy()
    weights = 1.0 / (per_group * plates_per_label)
    return weights / weights.sum()


def weak_fold(table: pd.DataFrame, cfg: TrainConfig) -> tuple[Fold, list[str]]:
    """The one fold of a weakly supervised run (every trainable row, no test) and its classes,
    checked: at least two labels to learn."""
    rows = trainable_rows(table, cfg)
    classes = sorted(set(label_values(table, cfg)[rows]))
    if len(classes) < 2:
        what = "controls included" if cfg.controls == "class" else "controls left out"
        raise CellmorphError(f"label: {cfg.label} finds {len(classes)} class(es) to learn "
                             f"({what}); a screen needs at least two {cfg.label}s")
    return Fold(WEAK_FOLD, rows, np.zeros(len(table), bool)), classes


def check_folds(cfg: TrainConfig) -> Callable[[pd.DataFrame], object]:
    """The check of an index a run makes before it writes anything: its folds can be made."""
    if cfg.weak_label:
        return lambda index: weak_fold(index, cfg)
    return lambda index: make_folds(index, by=cfg.fold_by, only=cfg.folds)


def run_fold(job: FoldJob, runtime: Runtime | None = None, *,
             progress_bars: bool = False) -> FoldOutput:
    """Train one fold from the seed's initial weights and write its outputs."""
    cfg = job.config
    runtime = runtime or runtime_from_names(job.device, job.precision)
    keep_freed_memory()  # a Ray worker process is not the driver that started the run
    torch.use_deterministic_algorithms(True, warn_only=True)
    cache = TileCache.open(job.cache_folder)
    store = TileStore(cache)
    labels = store_labels(store.table, job.classes, cfg)
    model = create_backbone(cfg.model, "random", num_classes=len(job.classes))
    model.load_state_dict(load_file(str(job.init_weights)))
    model.to(runtime.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    trunk, rest = split_model(model, cfg.freeze_stages)
    if cfg.freeze_stages:
        freeze(trunk)
    if cfg.compile:
        rest = torch.compile(rest)
    spec = make_input_spec(model, cache.channels, cfg.rgb_map, runtime.device, cfg.channels_last)
    trunk_cache = np.load(job.trunk_cache, mmap_mode="r") if job.trunk_cache else None
    trainer = FoldTrainer(model, trunk, rest, spec, cfg.hyper(), cfg.augment, runtime,
                          trunk_cache=trunk_cache, num_workers=cfg.num_workers,
                          progress=progress_bars)
    draw = (plate_balanced_weights(labels[job.train],
                                   store.table[sc.PLATE].astype(str).to_numpy()[job.train])
            if cfg.sampling == "plate-balanced" else None)
    epoch_probs, losses = trainer.fit(store, labels, job.train, job.test, len(job.classes),
                                      fold_seed(job.seed, job.fold), name=job.fold,
                                      draw=draw)
    out = job.output
    out.mkdir(parents=True, exist_ok=True)
    if job.keep_model:
        with atomic_path(out / "model.safetensors") as tmp:
            save_file(_model_tensors(model, half=cfg.keep_models == "explain"), str(tmp))
    stacked = np.stack(epoch_probs).astype(np.float32)
    write_npy(stacked, out / "epoch_probs.npy")
    write_json({"fold": job.fold, "train_loss": losses, "n_train": len(job.train),
                "n_test": len(job.test)}, out / "history.json")
    queries = None
    if len(job.queries):  # the screen's unknowns: no fold model saw them, so each one calls
        queries = _prediction_table(store.table, job.queries, job,
                                    trainer.predict(store, job.queries))
        write_parquet(queries, out / QUERIES_FILE)
    # Written last: its presence says the fold is complete (`FoldJob.done`).
    predictions = _prediction_table(store.table, job.test, job, epoch_probs[-1])
    write_parquet(predictions, out / "predictions.parquet")
    return FoldOutput(job.fold, predictions, stacked, losses, queries)


def _model_tensors(model: torch.nn.Module, *, half: bool) -> dict[str, torch.Tensor]:
    """The model's state to save; ``half``: floating tensors as float16 where they fit (what
    `keep_models: explain` keeps: models to look at, half the disk; loading casts back)."""
    state = _state(model)
    if not half:
        return state
    limit = torch.finfo(torch.float16).max
    return {k: v.half() if v.is_floating_point() and v.numel() and v.abs().max() < limit else v
            for k, v in state.items()}


def _prediction_table(table: pd.DataFrame, positions: np.ndarray, job: FoldJob,
                      probs: np.ndarray) -> pd.DataFrame:
    meta = table.iloc[positions][sc.metadata_columns(table)].reset_index(drop=True)
    values = pd.DataFrame(probs.reshape(len(positions), len(job.classes)),  # none: weak
                          columns=[f"{sc.PROB_PREFIX}{c}" for c in job.classes])
    return pd.concat([meta.assign(**{sc.FOLD: job.fold}), values], axis=1)


def load_fold(folder: Path) -> FoldOutput:
    """The outputs of a finished fold, read back from its folder."""
    history = json.loads((folder / "history.json").read_text())
    queries = folder / QUERIES_FILE
    return FoldOutput(history["fold"], pd.read_parquet(folder / "predictions.parquet"),
                      np.load(folder / "epoch_probs.npy"), history["train_loss"],
                      pd.read_parquet(queries) if queries.is_file() else None)


@dataclass
class FoldPlan:
    """Everything shared by a run's fold jobs."""

    cache: TileCache
    store: TileStore
    folds: list[Fold]
    classes: list[str]
    channels: list[str]
    folds_total: int
    novelty_folds: list[Fold] = field(default_factory=list)  # one per MoA, left out
    queries: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # unlabelled
    refit: Fold | None = None  # every labelled crop, no test (refit: true)

    @property
    def rows(self) -> np.ndarray:
        """Positions of the store that any fold trains, tests or calls."""
        used = np.zeros(len(self.store.table), bool)
        for fold in (*self.folds, *self.novelty_folds):
            used |= fold.train | fold.test
        used[self.queries] = True
        return np.flatnonzero(used)


def plan_folds(cfg: TrainConfig, index: pd.DataFrame, *, progress_bars: bool = True,
               device: torch.device | str = "cpu",
               cell_locations: pd.DataFrame | None = None) -> FoldPlan:
    """Build the tile cache (preprocessing on ``device``; cell crops at ``cell_locations``
    when given) and the folds of a run (no training yet)."""
    channels = sc.channels_of(index)
    tile_size = cfg.preprocess.input_size(default_input_size(cfg.model))
    cache = build_tile_cache(index, cfg.preprocess, cfg.cache_dir or cfg.output / "cache",
                             tile_size=tile_size, progress=progress_bars, device=device,
                             locations=cell_locations)
    store = TileStore(cache)
    if cfg.weak_label:
        fold, classes = weak_fold(store.table, cfg)
        return FoldPlan(cache, store, [fold], classes, channels, 1)
    folds = make_folds(store.table, by=cfg.fold_by, only=cfg.folds)
    classes = sorted(sc.treatments(store.table)[sc.MOA].astype(str).unique())
    total = len(make_folds(store.table, by=cfg.fold_by)) if cfg.folds else len(folds)
    novelty = make_folds(store.table, by=sc.MOA, unseen_classes=True) if cfg.novelty else []
    queries = np.flatnonzero((store.table[sc.ROLE] == sc.ROLE_UNLABELLED).to_numpy())
    labelled = sc.is_treatment(store.table).to_numpy()
    refit = Fold(REFIT, labelled, np.zeros_like(labelled)) if cfg.refit else None
    return FoldPlan(cache, store, folds, classes, channels, total, novelty, queries, refit)


def seed_jobs(cfg: TrainConfig, plan: FoldPlan, seed: int, seed_folder: Path, runtime: Runtime,
              *, novelty: bool = False) -> list[FoldJob]:
    """The fold jobs of one seed (``novelty``: its leave-one-MoA-out folds instead)."""
    folds, kind = (plan.novelty_folds, NOVELTY_FOLDS) if novelty else (plan.folds, "folds")
    kept = _kept_models(cfg, folds, plan.store.table,
                        first_seed=not novelty and seed == cfg.seeds[0])
    return [FoldJob(cfg, seed, f.name, np.flatnonzero(f.train), np.flatnonzero(f.test),
                    tuple(plan.classes), plan.cache.folder, seed_folder / "init.safetensors",
                    fold_dir(seed_folder, f.name, kind), None, runtime.device_name,
                    runtime.precision_name, f.name in kept,
                    plan.queries if not novelty else np.zeros(0, np.int64)) for f in folds]


def refit_job(cfg: TrainConfig, plan: FoldPlan, seed: int, seed_folder: Path,
              runtime: Runtime) -> FoldJob:
    """The seed's refitted model: trained on every labelled crop, calling the unlabelled
    ones; its model is kept unless ``keep_models: none`` (``cellmorph predict`` reads it)."""
    assert plan.refit is not None
    return FoldJob(cfg, seed, REFIT, np.flatnonzero(plan.refit.train), np.zeros(0, np.int64),
                   tuple(plan.classes), plan.cache.folder, seed_folder / "init.safetensors",
                   fold_dir(seed_folder, REFIT, REFIT), None, runtime.device_name,
                   runtime.precision_name, cfg.keep_models != "none", plan.queries)


def _kept_models(cfg: TrainConfig, folds: Sequence[Fold], table: pd.DataFrame, *,
                 first_seed: bool) -> set[str]:
    """The folds of a seed whose models are written (``keep_models``)."""
    if cfg.weak_label or cfg.keep_models == "all":  # a weak run's model is what it makes
        return {f.name for f in folds}
    if not first_seed or cfg.keep_models == "none":
        return set()
    if cfg.keep_models == "explain":
        return explained_folds(folds, table)
    return {f.name for f in folds}  # embed


def explained_folds(folds: Sequence[Fold], table: pd.DataFrame) -> set[str]:
    """The folds whose models ``keep_models: explain`` keeps: in name order, each fold that
    tests a MoA no earlier fold tested (leave-one-compound-out: one fold per MoA), so that
    `cellmorph explain` has a model for crops of every MoA, and one for the filters."""
    moas = table[sc.MOA].astype(str).to_numpy()
    seen: set[str] = set()
    kept = set()
    for fold in sorted(folds, key=lambda f: f.name):
        tested = set(moas[fold.test])
        if tested - seen:
            kept.add(fold.name)
            seen |= tested
    return kept


def initial_model(cfg: TrainConfig, n_classes: int, seed: int, path: Path) -> torch.nn.Module:
    """The seed's initial weights, saved once so every fold (and every rerun) starts there.
    Where a finished seed's file was set aside (:func:`set_aside_initial`), it is made again
    from the seed and must be the same to the byte, or the run is refused."""
    if path.is_file():
        return load_initial(cfg, n_classes, seed, path)
    model = _checked_initial(cfg, n_classes, seed, path)
    with atomic_path(path) as tmp:
        save_file(_state(model), str(tmp))
    return model


def load_initial(cfg: TrainConfig, n_classes: int, seed: int, path: Path) -> torch.nn.Module:
    """A seed's initial weights to read (``explain``): the saved file, or, where it was set
    aside, made again in memory and checked against its digest."""
    if not path.is_file() and not _initial_record(path).is_file():
        raise CellmorphError(f"{path} not found, nor its digest: the run's seed folder is "
                             "incomplete; rerun train to redo it")
    if not path.is_file():
        return _checked_initial(cfg, n_classes, seed, path)
    model = _from_seed(cfg, n_classes, seed)
    model.load_state_dict(load_file(str(path)))
    return model


def set_aside_initial(path: Path) -> None:
    """Replace a finished seed's initial weights (the size of the network) by their digest:
    no fold is left to start from them, and adding folds, or ``explain``, makes them again
    from the seed (checked against the digest)."""
    if path.is_file():
        write_json({"sha256": file_digest(path)}, _initial_record(path))
        path.unlink()


def _initial_record(path: Path) -> Path:
    return path.with_suffix(".json")


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _from_seed(cfg: TrainConfig, n_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_backbone(cfg.model, cfg.weights, num_classes=n_classes)


def _checked_initial(cfg: TrainConfig, n_classes: int, seed: int,
                     path: Path) -> torch.nn.Module:
    """The seed's initial network, made from the seed; where its digest was recorded, the
    same to the byte (the digest of the file's bytes: safetensors writes them alike)."""
    model = _from_seed(cfg, n_classes, seed)
    record = _initial_record(path)
    if record.is_file():
        digest = hashlib.sha256(safetensors_bytes(_state(model))).hexdigest()[:16]
        if json.loads(record.read_text()).get("sha256") != digest:
            raise CellmorphError(f"{path.parent}: the seed's initial weights, made again, "
                                 "differ from those its folds started from (another torch, "
                                 "timm or weights file?); rerun with --overwrite to start "
                                 "afresh")
    return model


def prepare_trunk_cache(cfg: TrainConfig, plan: FoldPlan, model: torch.nn.Module,
                        runtime: Runtime, path: Path, *, progress_bars: bool = True) -> Path:
    """Compute (once) the frozen trunk's activations for every labelled crop."""
    if path.is_file():
        return path
    trunk, _ = split_model(model.to(runtime.device), cfg.freeze_stages)
    spec = make_input_spec(model, plan.channels, cfg.rgb_map, runtime.device, cfg.channels_last)
    positions = plan.rows
    # Written in place as a memory map (it may be larger than RAM), renamed when complete.
    part = partial_path(path)
    try:
        compute_trunk_cache(freeze(trunk), plan.store, positions, spec, runtime, part,
                            dtype=cfg.trunk_cache_dtype, progress_bar=progress_bars)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def run_jobs(cfg: TrainConfig, jobs: Sequence[FoldJob], runtime: Runtime, *,
             progress_bars: bool = True, desc: str = "folds") -> list[FoldOutput]:
    """Run the unfinished fold jobs with the configured executor; finished ones are read
    back. Outputs come in job order."""
    if cfg.executor == "local":
        return run_sequentially(jobs, runtime, progress_bars=progress_bars, desc=desc)
    todo = [job for job in jobs if not job.done]
    log.info("%s: %d fold job(s) on Ray", desc, len(todo))
    computed = dict(zip([j.fold for j in todo], map_tasks(
        run_fold, todo, threads=torch.get_num_threads(),
        use_gpu=runtime.device.type == "cuda", address=cfg.ray_address), strict=True))
    return [computed[job.fold] if job.fold in computed else load_fold(job.output)
            for job in jobs]


def run_sequentially(jobs: Sequence[FoldJob], runtime: Runtime, *,
                     progress_bars: bool = True, desc: str = "folds") -> list[FoldOutput]:
    """Run fold jobs one after the other in this process (finished ones are read back)."""
    outputs = []
    for job in progress(jobs, desc=desc, unit="fold", enabled=progress_bars):
        if job.done:
            outputs.append(load_fold(job.output))
            continue
        outputs.append(run_fold(job, runtime, progress_bars=progress_bars))
        log.info("fold %s (seed %d) done", job.fold, job.seed)
    return outputs


def _run_seed(cfg: TrainConfig, plan: FoldPlan, seed: int, out: Path, runtime: Runtime,
              run: TrainingRun, progress_bars: bool) -> None:
    """Every fold of one seed (and, for the first seed, its leave-one-MoA-out folds)."""
    rep = ensure_writable_dir(out / f"seed{seed}")
    folds = seed_jobs(cfg, plan, seed, rep, runtime)
    held_out = (seed_jobs(cfg, plan, seed, rep, runtime, novelty=True)
                if plan.novelty_folds and seed == cfg.seeds[0] else [])
    refit = [refit_job(cfg, plan, seed, rep, runtime)] if plan.refit is not None else []
    if not all(job.done for job in folds + held_out + refit):  # a finished seed needs none
        model = initial_model(cfg, len(plan.classes), seed, rep / "init.safetensors")
        if cfg.cached_trunk:
            cache = prepare_trunk_cache(cfg, plan, model, runtime, rep / "trunk_cache.npy",
                                        progress_bars=progress_bars)
            folds, held_out, refit = ([replace(j, trunk_cache=cache) for j in jobs]
                                      for jobs in (folds, held_out, refit))
    outputs = run_jobs(cfg, folds + refit, runtime, progress_bars=progress_bars,
                       desc=f"folds (seed {seed})")
    run.seeds.append(SeedRun(seed, rep, outputs[:len(folds)],
                             outputs[-1] if refit else None))
    if held_out:
        run.novelty = SeedRun(seed, rep, run_jobs(
            cfg, held_out, runtime, progress_bars=progress_bars,
            desc=f"leave-one-MoA-out folds (seed {seed})"))
    set_aside_initial(rep / "init.safetensors")  # every fold done: a digest will do


def run_folds(cfg: TrainConfig, *, progress_bars: bool = True, overwrite: bool = False,
              index_table: pd.DataFrame | None = None,
              finish: Callable[[TrainingRun], object] | None = None,
              outputs: Sequence[str] = ()) -> TrainingRun:
    """Train and predict every fold of every seed; returns their outputs.

    Every fold starts from the seed's saved initial weights; finished folds are skipped, so
    an interrupted run resumes where it stopped. The run folder must have been made with the
    same configuration (more folds or seeds may be added); ``overwrite`` starts afresh.
    ``index_table``, ``finish`` and ``outputs`` are as for
    :func:`cellmorph.profiling.screen.profile_screen`.
    """
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Bad folds fail before preprocessing.
    layout = RunLayout(results=(*(f"seed{s}" for s in cfg.seeds), *outputs))
    with start_run(cfg, kind="train", layout=layout, overwrite=overwrite,
                   index_table=index_table, check_index=check_folds(cfg)) as started:
        out, runtime, index, described = (started.folder, started.runtime, started.index,
                                          started.described)
        plan = plan_folds(cfg, index, progress_bars=progress_bars,
                          device=runtime.preprocess_device,
                          cell_locations=started.cell_locations)
        rows = plan.rows
        run = TrainingRun(cfg, plan.classes, plan.folds_total, runtime=described,
                          trained=trained_layers(cfg), rows=len(rows),
                          plates=plan.store.table[sc.PLATE].iloc[rows].nunique(),
                          synthetic=sc.is_synthetic(plan.store.table))
        for seed in cfg.seeds:
            _run_seed(cfg, plan, seed, out, runtime, run, progress_bars)
        if finish is not None:
            finish(run)
    return run
