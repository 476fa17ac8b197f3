"""Profiling: index -> tile cache -> frozen backbone -> image/well/treatment profiles.

The unit of work is one plate (:class:`PlateJob`): its tiles are embedded and aggregated to
image-level profiles, written as ``plates/<plate>.parquet``. Plates run one at a time (memory
stays bounded for any screen size) and a finished plate is never redone, so a rerun resumes.
The run returns a :class:`ProfileResult`; writing the tables is a separate step
(:func:`cellmorph.reporting.writers.write_profiles`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cellmorph import schema as sc
from cellmorph.atomic import ensure_writable_dir, write_parquet
from cellmorph.backbones import create_backbone, default_input_size, fold_batchnorm
from cellmorph.backbones.model_input import make_input_spec
from cellmorph.cache import KEEP, TILE, TileCache, build_tile_cache, iter_tile_cache, safe_name
from cellmorph.config import ProfileConfig
from cellmorph.errors import CellmorphError
from cellmorph.executors import map_actors
from cellmorph.log import get_logger, progress
from cellmorph.profiling.features import TileEmbedder, feature_names
from cellmorph.profiling.fold_models import FoldEmbedders, swapping_weights
from cellmorph.profiling.qc import drop_flagged, flag_fields
from cellmorph.records import ShortRepr
from cellmorph.runs import RunLayout, discard, start_run
from cellmorph.runtime import (
    Runtime,
    keep_freed_memory,
    release_freed_memory,
    resolve_runtime,
    runtime_from_names,
)

log = get_logger(__name__)
CELLS_FOLDER = "cells"  # per-cell profiles, one Parquet file a plate


@dataclass(repr=False)
class ProfileResult(ShortRepr):
    """Profiles of a screen at three levels, with the run's settings and timings.

    Tables follow pycytominer's layout: ``Metadata_*`` columns plus ``Feature_*`` columns.
    ``Metadata_Count`` counts the kept tiles of an image, the profiled images of a well, and
    the wells of a treatment (see :mod:`cellmorph.schema`).
    """

    config: ProfileConfig
    images: pd.DataFrame
    wells: pd.DataFrame
    treatments: pd.DataFrame
    runtime: dict[str, str | bool] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    qc: pd.DataFrame | None = None  # every field's image quality and flags (profiling.qc)

    def summary_table(self) -> pd.DataFrame:
        """Rows and features of each level (what a notebook shows)."""
        return pd.DataFrame([{"level": level, "rows": len(table),
                              "features": len(sc.feature_columns(table))}
                             for level, table in (("image", self.images), ("well", self.wells),
                                                  ("treatment", self.treatments))])


class StageTimer:
    """Accumulates wall seconds per named stage (written as timings.json with a run)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def make_embedder(cfg: ProfileConfig, channels: Sequence[str],
                  runtime: Runtime | None = None) -> TileEmbedder:
    """The frozen backbone wrapped for tiles, as the config says."""
    runtime = runtime or resolve_runtime(cfg.device, cfg.precision)
    torch.manual_seed(cfg.seed)
    model = create_backbone(cfg.model, cfg.weights, num_classes=0).eval()
    if cfg.fold_batchnorm:
        model, folded = fold_batchnorm(model)
        log.debug("%d BatchNorm layers folded into their convolutions", folded)
    rgb_map = cfg.rgb_map if cfg.channel_mode == "rgb" else None
    spec = make_input_spec(model, channels, rgb_map, runtime.device, cfg.channels_last)
    return TileEmbedder(model, spec, runtime)


Embedder = TileEmbedder | FoldEmbedders


def make_plate_embedder(cfg: ProfileConfig, channels: Sequence[str],
                        runtime: Runtime | None = None) -> Embedder:
    """What embeds a plate's tiles: the network, or a leave-one-out run's fold models
    (``fold_models``), each tile by the model that never saw it."""
    if not cfg.fold_models:
        return make_embedder(cfg, channels, runtime)
    runtime = runtime or resolve_runtime(cfg.device, cfg.precision)
    one = make_embedder(cfg.model_copy(update={"fold_batchnorm": False}), channels, runtime)
    return FoldEmbedders(swapping_weights(one), cfg.fold_models, cfg.weights, cfg.fold_by,
                         cfg.channel_mode)


def tile_profiles(tiles: np.ndarray, table: pd.DataFrame, embedder: Embedder,
                  channels: Sequence[str], *, batch_size: int = 64) -> pd.DataFrame:
    """One profile per kept tile of a plate (per cell, with ``tiles: cells``).

    ``tiles`` (N, C, S, S) uint8 and ``table`` (one row per tile, from the tile cache) are a
    plate's; tiles the empty filter dropped are skipped.
    """
    kept = table[KEEP].to_numpy()
    if not kept.any():  # a plate without a cell (or a kept tile): nothing to embed
        return table.iloc[:0].drop(columns=[KEEP, TILE])
    meta = table.loc[kept].drop(columns=[KEEP, TILE]).reset_index(drop=True)
    if isinstance(embedder, FoldEmbedders):
        feats = embedder(tiles[kept], batch_size=batch_size, table=meta)
        meta[sc.FOLD] = embedder.routes(meta)  # which fold's model embedded the tile
    else:
        feats = embedder(tiles[kept], batch_size=batch_size)
    if not np.isfinite(feats).all():
        raise CellmorphError(f"plate {table[sc.PLATE].iloc[0]}: the network produced NaN or "
                             "infinite features; try --precision fp32 or other weights")
    names = feature_names(feats.shape[1], channels, embedder.mode)
    return pd.concat([meta, pd.DataFrame(feats, columns=names)], axis=1)


def profile_plate(tiles: np.ndarray, table: pd.DataFrame, embedder: Embedder,
                  channels: Sequence[str], *, method: str = "mean",
                  batch_size: int = 64) -> pd.DataFrame:
    """Image-level profiles of one plate from its cached tiles (:func:`tile_profiles`
    aggregated); a field whose every tile was dropped gets no profile (a warning says how
    many)."""
    return images_of(tile_profiles(tiles, table, embedder, channels, batch_size=batch_size),
                     table, method)


def images_of(tile_table: pd.DataFrame, table: pd.DataFrame, method: str) -> pd.DataFrame:
    """Tile (or cell) profiles of a plate aggregated to its images."""
    n_fields = table[sc.IMAGE_KEYS].drop_duplicates().shape[0]
    n_kept = tile_table[sc.IMAGE_KEYS].drop_duplicates().shape[0]
    if n_kept < n_fields:
        log.warning("%d of %d fields on plate %s had no kept tiles or cells and get no "
                    "profile", n_fields - n_kept, n_fields, table[sc.PLATE].iloc[0])
    if n_kept == 0:
        return pd.DataFrame()
    return sc.aggregate(tile_table, sc.IMAGE_KEYS, method)


@dataclass(frozen=True)
class PlateJob:
    """One plate of a profiling run: everything it needs, picklable (for an executor)."""

    plate: str
    cache_folder: Path
    output: Path
    channels: tuple[str, ...]
    method: str = "mean"
    batch_size: int = 64
    cells_output: Path | None = None  # per-cell profiles (tiles: cells), written first

    @property
    def done(self) -> bool:
        """True when the plate's profiles are already on disk (a rerun skips it)."""
        return self.output.is_file()

    def run(self, embedder: Embedder) -> pd.DataFrame:
        """Embed the plate's tiles, aggregate to images, write and return the plate's table
        (and, for cell crops, the per-cell table: one plate in memory at a time)."""
        cache = TileCache(self.cache_folder, (self.plate,))
        table = cache.table(self.plate)
        tiles = tile_profiles(cache.tiles(self.plate), table, embedder, self.channels,
                              batch_size=self.batch_size)
        if self.cells_output is not None:
            write_parquet(tiles, self.cells_output)
        images = images_of(tiles, table, self.method)
        write_parquet(images, self.output)
        return images


class PlateWorker:
    """A Ray actor (through Ray Data's ``map_batches``): loads the model once, then profiles
    the plate of every batch (one job a batch) and writes its table, as the local path does."""

    def __init__(self, config: dict, channels: list[str], device: str, precision: str,
                 threads: int) -> None:
        torch.set_num_threads(threads)
        keep_freed_memory()
        self.embedder = make_plate_embedder(ProfileConfig(**config), channels,
                                            runtime_from_names(device, precision))

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Run the batch's plate jobs; returns their plates and output paths."""
        for row in batch.to_dict("records"):
            job = PlateJob(row["plate"], Path(row["cache_folder"]), Path(row["output"]),
                           tuple(row["channels"]), row["method"], int(row["batch_size"]),
                           Path(row["cells_output"]) if row["cells_output"] else None)
            job.run(self.embedder)
            release_freed_memory()
        return batch[["plate", "output", "_order"]]


def run_plate_jobs_on_ray(cfg: ProfileConfig, jobs: Sequence[PlateJob],
                          channels: Sequence[str], runtime: Runtime) -> None:
    """Run plate jobs on a Ray actor pool (``cfg.ray_address``); each writes its plate's
    table, which is then read back like that of a finished plate. (The local path embeds
    each plate as its tiles become ready, in :func:`profile_screen`.)"""
    rows = [{"plate": j.plate, "cache_folder": str(j.cache_folder), "output": str(j.output),
             "channels": list(j.channels), "method": j.method, "batch_size": j.batch_size,
             "cells_output": str(j.cells_output or "")} for j in jobs]
    log.info("profiling %d plate(s) on a Ray actor pool", len(rows))
    map_actors(PlateWorker, rows, threads=torch.get_num_threads(),
               use_gpu=runtime.device.type == "cuda", address=cfg.ray_address,
               constructor={"config": cfg.model_dump(mode="json"), "channels": list(channels),
                            "device": runtime.device_name,
                            "precision": runtime.precision_name})


def plate_jobs(cfg: ProfileConfig, cache: TileCache, channels: Sequence[str],
               folder: Path, plates: Sequence[str] | None = None) -> list[PlateJob]:
    """One job per plate of the cache (or of ``plates``), writing ``folder/<plate>.parquet``
    (and, for cell crops, ``<folder>/../cells/<plate>.parquet``)."""
    cells = folder.parent / CELLS_FOLDER if cfg.preprocess.tiles == "cells" else None
    return [PlateJob(p, cache.folder, folder / f"{safe_name(p)}.parquet", tuple(channels),
                     cfg.aggregate, cfg.batch_size,
                     None if cells is None else cells / f"{safe_name(p)}.parquet")
            for p in (plates or cache.plates)]


def resolve_workers(workers: int | str, runtime: Runtime) -> int:
    """Preprocessing worker processes: ``auto`` uses all cores but one beside a GPU, and none
    on a CPU-only machine (there the network already keeps every core busy)."""
    if workers != "auto":
        return int(workers)
    if runtime.device.type == "cuda":
        return max(1, min(8, (os.cpu_count() or 2) - 1))
    return 0


# What a profiling run (and evaluate, explain and report after it) creates in its folder.
def _plate_results(plates: list[str]) -> list[str]:
    """The recorded files holding the results of ``plates`` (redone when their images
    change)."""
    return [f"{folder}/{safe_name(p)}.parquet" for p in plates
            for folder in ("plates", CELLS_FOLDER)]


def profile_screen(cfg: ProfileConfig, *, progress_bars: bool = True, overwrite: bool = False,
                   index_table: pd.DataFrame | None = None,
                   finish: Callable[[ProfileResult], object] | None = None,
                   outputs: Sequence[str] = ()) -> ProfileResult:
    """Run the profiling pipeline; returns the profile tables (and keeps per-plate results
    in ``OUTPUT/plates`` so that an interrupted run resumes).

    The run folder must have been made with the same configuration (or be new); with
    ``overwrite`` its results are deleted first. Device, model and weights are checked before
    any preprocessing starts. ``index_table`` is an index given as a table (saved in the run
    folder as ``cfg.index``); ``finish`` is called with the result while the folder is still
    held (to write its files); ``outputs`` names what the caller writes at the top of the
    folder (now or in later commands), so that the run's manifest claims it.

    Examples
    --------
    >>> result = profile_screen(ProfileConfig(index="index.parquet", output="run"))
    ... # doctest: +SKIP
    """
    timer = StageTimer()
    layout = RunLayout(results=("plates", CELLS_FOLDER, *outputs))
    with start_run(cfg, kind="profile", layout=layout, overwrite=overwrite,
                   index_table=index_table, stale=_plate_results) as run:
        plates = _PlatesRun(cfg, run.index, run.runtime, ensure_writable_dir(run.folder / "plates"),
                            cfg.cache_dir or run.folder / "cache", timer, progress_bars,
                            run.cell_locations)
        if cfg.preprocess.tiles == "cells":
            ensure_writable_dir(run.folder / CELLS_FOLDER)
        embed = _embed_on_ray if cfg.executor == "ray" else _embed_as_tiles_are_ready
        cache, done_here, computed = embed(plates)
        with timer("aggregate"):
            qc = flag_fields(pd.concat([cache.quality(p) for p in cache.plates],
                                       ignore_index=True), plates.channels, cfg.qc)
            images, wells, treatments = _aggregate_plates(
                cfg, plate_jobs(cfg, cache, plates.channels, plates.folder), computed, qc)
        result = ProfileResult(cfg, images, wells, treatments, run.described,
                               {**timer.seconds,
                                "tiles_embedded": _tiles_embedded(cache, done_here)}, qc)
        if finish is not None:
            finish(result)
        if not cfg.keep_cache and cfg.cache_dir is None:
            discard(run.folder, "cache")
    return result


@dataclass
class _PlatesRun:
    """What embedding a screen's plates needs, once the run folder is held."""

    cfg: ProfileConfig
    index: pd.DataFrame
    runtime: Runtime
    folder: Path  # OUTPUT/plates: one Parquet of image profiles per plate
    cache_root: Path
    timer: StageTimer
    progress_bars: bool
    cell_locations: pd.DataFrame | None = None

    @property
    def channels(self) -> list[str]:
        return sc.channels_of(self.index)

    def cache_args(self) -> dict:
        """Arguments of the tile cache builders."""
        cfg = self.cfg
        return dict(tile_size=cfg.preprocess.input_size(default_input_size(cfg.model)),
                    workers=resolve_workers(cfg.preprocess_workers, self.runtime),
                    progress=self.progress_bars, device=self.runtime.preprocess_device,
                    locations=self.cell_locations)


def _embed_on_ray(plates: _PlatesRun) -> tuple[TileCache, list[PlateJob], dict]:
    """Build every plate's tiles first (Ray actors read finished caches), then embed the
    unfinished plates on Ray; their profiles are read back from their files."""
    with plates.timer("read_preprocess_cache"):
        cache = build_tile_cache(plates.index, plates.cfg.preprocess, plates.cache_root,
                                 **plates.cache_args())
    todo = [j for j in plate_jobs(plates.cfg, cache, plates.channels, plates.folder)
            if not j.done]
    with plates.timer("infer"):
        run_plate_jobs_on_ray(plates.cfg, todo, plates.channels, plates.runtime)
    return cache, todo, {}


def _embed_as_tiles_are_ready(plates: _PlatesRun) -> tuple[TileCache, list[PlateJob], dict]:
    """Embed each unfinished plate here as soon as its tiles are ready (preprocessing the
    next plates meanwhile when there are workers); returns the cache, the jobs run and their
    image profiles."""
    cfg, timer = plates.cfg, plates.timer
    done_here, computed, embedder = [], {}, None
    pending = sum(not (plates.folder / f"{safe_name(p)}.parquet").is_file()
                  for p in plates.index[sc.PLATE].unique())
    bar = progress(total=pending, desc="profiling plates", unit="plate",
                   enabled=plates.progress_bars)
    ready = iter_tile_cache(plates.index, cfg.preprocess, plates.cache_root,
                            **plates.cache_args())
    cache = None
    while True:
        with timer("read_preprocess_cache"):  # waiting for tiles (or making them)
            item = next(ready, None)
        if item is None:
            break
        cache, plate = item
        job = plate_jobs(cfg, cache, plates.channels, plates.folder, [plate])[0]
        if job.done:
            continue
        with timer("infer"):
            embedder = embedder or make_plate_embedder(cfg, plates.channels, plates.runtime)
            computed[plate] = job.run(embedder)
        release_freed_memory()  # memory stays flat in the number of plates
        done_here.append(job)
        bar.update()
    bar.close()
    return cache, done_here, computed


def _aggregate_plates(cfg: ProfileConfig, jobs: Sequence[PlateJob], computed: dict,
                      qc: pd.DataFrame | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Image profiles of every plate (computed now or read back; the fields ``qc`` drops
    left out), their wells and the treatments (controls left out)."""
    images = pd.concat([computed[job.plate] if job.plate in computed
                        else pd.read_parquet(job.output) for job in jobs], ignore_index=True)
    if qc is not None and len(images):
        images = drop_flagged(images, qc)
    if images.empty:
        found = "cell" if cfg.preprocess.tiles == "cells" else "kept tile"
        raise CellmorphError(f"no field of the screen had a {found} to profile; check the "
                             "preprocessing settings (cells: nuclei_stain, min_area, size and "
                             "edge; tiles: drop_empty)")
    sums = [sc.CELL_COUNT] if sc.CELL_COUNT in images.columns else []  # cell runs
    wells = sc.aggregate(images, sc.WELL_KEYS, cfg.aggregate, sums=sums)
    treated = wells[wells[sc.ROLE] != sc.ROLE_CONTROL]
    return images, wells, sc.aggregate(treated, sc.TREATMENT_KEYS, cfg.aggregate, sums=sums)


def _tiles_embedded(cache: TileCache, jobs: Sequence[PlateJob]) -> int:
    return int(sum(cache.table(job.plate)[KEEP].sum() for job in jobs))
