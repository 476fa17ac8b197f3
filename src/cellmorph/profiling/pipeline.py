"""``cellmorph profile``: index -> tile cache -> frozen backbone -> image/well/treatment profiles.

Plates are processed one at a time (memory stays bounded for any screen size) and each
plate's image-level profile is written as it completes, so a rerun resumes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from cellmorph.atomic import ensure_writable_dir, write_json, write_parquet
from cellmorph.backbones import create_backbone, data_config, default_input_size
from cellmorph.cache import KEEP, TILE, build_tile_cache, safe_name
from cellmorph.config import ProfileConfig, save_config
from cellmorph.datasets import index as ix
from cellmorph.datasets.index import read_index
from cellmorph.profiling.aggregate import IMAGE_KEYS, TREATMENT_KEYS, WELL_KEYS, aggregate
from cellmorph.profiling.features import (
    TileEmbedder,
    feature_names,
    resolve_device,
    resolve_precision,
    rgb_mixing,
)


def make_embedder(cfg: ProfileConfig, channels: list[str]) -> TileEmbedder:
    """The frozen backbone wrapped for tiles, as the config says."""
    torch.manual_seed(cfg.seed)
    model = create_backbone(cfg.model, cfg.weights, num_classes=0)
    norm = data_config(model)
    device = resolve_device(cfg.device)
    mixing = rgb_mixing(channels, cfg.rgb_map) if cfg.channel_mode == "rgb" else None
    return TileEmbedder(model, norm["mean"], norm["std"], mode=cfg.channel_mode, mixing=mixing,
                        device=device, precision=resolve_precision(cfg.precision, device),
                        channels_last=cfg.channels_last)


def profile_screen(cfg: ProfileConfig, *, progress: bool = True) -> dict[str, Path]:
    """Run the profiling pipeline; returns the paths of the profile tables it wrote."""
    out = ensure_writable_dir(cfg.output)
    save_config(cfg, out / "config.yaml")
    timer = StageTimer()
    index = read_index(cfg.index)
    channels = ix.channels_of(index)
    tile_size = cfg.preprocess.tile_size or default_input_size(cfg.model)
    with timer("read_preprocess_cache"):
        cache = build_tile_cache(index, cfg.preprocess, cfg.cache_dir or out / "cache",
                                 tile_size=tile_size, progress=progress)
    with timer("load_model"):
        embedder = make_embedder(cfg, channels)
    plate_dir = ensure_writable_dir(out / "plates")
    parts = []
    n_tiles = 0
    for plate in tqdm(cache.plates, desc="profiling plates", unit="plate", disable=not progress):
        path = plate_dir / f"{safe_name(plate)}.parquet"
        if not path.is_file():
            table = cache.table(plate)
            kept = table[KEEP].to_numpy()
            tiles = cache.tiles(plate)[kept]
            n_tiles += len(tiles)
            with timer("infer"):
                feats = embedder(tiles, batch_size=cfg.batch_size)
            names = feature_names(feats.shape[1], channels, cfg.channel_mode)
            tile_profiles = pd.concat(
                [table.loc[kept].drop(columns=[KEEP, TILE]).reset_index(drop=True),
                 pd.DataFrame(feats, columns=names)], axis=1)
            tile_profiles = _all_images_present(tile_profiles, table)
            with timer("aggregate_write"):
                write_parquet(aggregate(tile_profiles, IMAGE_KEYS, cfg.aggregate), path)
        parts.append(pd.read_parquet(path))
    with timer("aggregate_write"):
        images = pd.concat(parts, ignore_index=True)
        wells = aggregate(images, WELL_KEYS, cfg.aggregate)
        labelled = wells[wells[ix.ROLE] != ix.ROLE_CONTROL]
        treatments = aggregate(labelled, TREATMENT_KEYS, cfg.aggregate)
        paths = {
            "images": write_parquet(images, out / "profiles_image.parquet"),
            "wells": write_parquet(wells, out / "profiles_well.parquet"),
            "treatments": write_parquet(treatments, out / "profiles_treatment.parquet"),
            "config": out / "config.yaml",
        }
    paths["timings"] = write_json({**timer.seconds, "tiles_embedded": n_tiles},
                                  out / "timings.json")
    return paths


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


def _all_images_present(tile_profiles: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Fields whose every tile was empty get no profile; say so rather than drop silently."""
    n_fields = table[IMAGE_KEYS].drop_duplicates().shape[0]
    n_kept = tile_profiles[IMAGE_KEYS].drop_duplicates().shape[0]
    if n_kept < n_fields:
        print(f"note: {n_fields - n_kept} of {n_fields} fields on plate "
              f"{table[ix.PLATE].iloc[0]} had only empty tiles and get no profile")
    return tile_profiles

