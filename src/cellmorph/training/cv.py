"""``cellmorph train``: cross-validated fine-tuning with resumable folds and replicate seeds.

Run folder::

    OUTPUT/config.yaml                 the whole run, as given
    OUTPUT/seed<S>/init.safetensors    the initial weights every fold starts from
    OUTPUT/seed<S>/folds/<fold>/       model.safetensors, history.json, predictions.parquet
    OUTPUT/seed<S>/metrics.json, predictions_<level>.csv, confusion.png, accuracy_per_epoch.png
    OUTPUT/metrics.json                mean +- SEM over seeds

A fold's ``predictions.parquet`` is written last and marks it done: a rerun skips it.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from cellmorph.atomic import atomic_path, ensure_writable_dir, write_csv, write_json, write_parquet
from cellmorph.backbones import default_input_size
from cellmorph.cache import TileStore, build_tile_cache, safe_name
from cellmorph.config import TrainConfig, save_config
from cellmorph.datasets import index as ix
from cellmorph.datasets.index import read_index
from cellmorph.evaluation.knn import confusion
from cellmorph.profiling.aggregate import metadata_columns
from cellmorph.profiling.features import resolve_device, resolve_precision
from cellmorph.report.plots import plot_confusion, plot_curves
from cellmorph.training.folds import make_folds
from cellmorph.training.model import create_classifier, freeze, split_model
from cellmorph.training.predictions import PROB_PREFIX, aggregate_probabilities
from cellmorph.training.trainer import (
    FoldTrainer,
    InputSpec,
    compute_trunk_cache,
    make_input_spec,
)

FOLD_COLUMN = "Metadata_Fold"


def fold_seed(seed: int, fold: str) -> int:
    """A per-fold seed that does not depend on which folds ran before (resumable)."""
    return zlib.crc32(f"{seed}/{fold}".encode())


def run_cross_validation(cfg: TrainConfig, *, progress: bool = True) -> dict:
    """Train and evaluate every fold for every seed; returns the summary metrics."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    out = ensure_writable_dir(cfg.output)
    save_config(cfg, out / "config.yaml")
    index = read_index(cfg.index)
    channels = ix.channels_of(index)
    tile_size = cfg.preprocess.tile_size or default_input_size(cfg.model)
    cache = build_tile_cache(index, cfg.preprocess, cfg.cache_dir or out / "cache",
                             tile_size=tile_size, progress=progress)
    store = TileStore(cache)
    table = store.table
    folds = make_folds(table, by=cfg.fold_by, only=cfg.folds)
    classes = sorted(table.loc[table[ix.ROLE] == ix.ROLE_TREATMENT, ix.MOA].astype(str).unique())
    labels = np.array([classes.index(m) if r == ix.ROLE_TREATMENT else -1
                       for m, r in zip(table[ix.MOA].astype(str), table[ix.ROLE], strict=True)])
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    per_seed = []
    for seed in cfg.seeds:
        rep = ensure_writable_dir(out / f"seed{seed}")
        model = _initial_model(cfg, len(classes), seed, rep / "init.safetensors")
        init_state = {k: v.clone() for k, v in model.state_dict().items()}
        spec = make_input_spec(model, channels, cfg.rgb_map, device, cfg.channels_last)
        trunk_cache = None
        todo = [f for f in folds if not (_fold_dir(rep, f.name) / "predictions.parquet").is_file()]
        if cfg.cached_trunk and todo:
            trunk, _ = split_model(model.to(device), cfg.freeze_stages)
            positions = np.flatnonzero(labels >= 0)
            trunk_cache = compute_trunk_cache(
                freeze(trunk), store, positions, spec, device=device, precision=precision,
                dtype=getattr(torch, cfg.trunk_cache_dtype), progress=progress)
        for fold in tqdm(folds, desc=f"folds (seed {seed})", unit="fold", disable=not progress):
            fdir = _fold_dir(rep, fold.name)
            if (fdir / "predictions.parquet").is_file():
                continue
            model.load_state_dict(init_state)
            _train_fold(cfg, model, spec, store, labels, fold, classes, seed, fdir, device,
                        precision, trunk_cache, progress)
        per_seed.append(_summarise_seed(rep, folds, cfg.report_level))
    summary = _summarise_runs(per_seed, cfg)
    write_json(summary, out / "metrics.json")
    curves = {f"seed {s}": r["per_epoch_accuracy"] for s, r in zip(cfg.seeds, per_seed,
                                                                     strict=True)}
    plot_curves(curves, f"{cfg.report_level}-level test accuracy per epoch", "epoch",
                "accuracy", out / "accuracy_per_epoch.png")
    return summary


def _initial_model(cfg: TrainConfig, n_classes: int, seed: int, path: Path) -> torch.nn.Module:
    """The seed's initial weights, saved once so every fold (and every rerun) starts there."""
    torch.manual_seed(seed)
    model = create_classifier(cfg.model, cfg.weights, n_classes)
    if path.is_file():
        model.load_state_dict(load_file(str(path)))
    else:
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return model


def _train_fold(cfg: TrainConfig, model: torch.nn.Module, spec: InputSpec, store: TileStore,
                labels: np.ndarray, fold, classes: list[str], seed: int, fdir: Path,
                device: torch.device, precision, trunk_cache, progress: bool) -> None:
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(True)
    trunk, rest = split_model(model, cfg.freeze_stages)
    if cfg.freeze_stages:
        freeze(trunk)
    if cfg.compile:
        rest = torch.compile(rest)
    trainer = FoldTrainer(model, trunk, rest, spec, cfg.hyper(), cfg.augment, device=device,
                          precision=precision, trunk_cache=trunk_cache,
                          num_workers=cfg.num_workers, progress=progress)
    train, test = np.flatnonzero(fold.train), np.flatnonzero(fold.test)
    epoch_probs, losses = trainer.fit(store, labels, train, test, len(classes),
                                      fold_seed(seed, fold.name))
    fdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(fdir / "model.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(tmp))
    with atomic_path(fdir / "epoch_probs.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.stack(epoch_probs).astype(np.float32))
    write_json({"fold": fold.name, "train_loss": losses, "n_train": len(train),
                "n_test": len(test)}, fdir / "history.json")
    meta = store.table.iloc[test][metadata_columns(store.table)].reset_index(drop=True)
    probs = pd.DataFrame(epoch_probs[-1], columns=[f"{PROB_PREFIX}{c}" for c in classes])
    write_parquet(pd.concat([meta.assign(**{FOLD_COLUMN: fold.name}), probs], axis=1),
                  fdir / "predictions.parquet")


def _fold_dir(rep: Path, name: str) -> Path:
    # The hash keeps names apart that sanitise to the same string.
    return rep / "folds" / f"{safe_name(name)}-{zlib.crc32(name.encode()) & 0xFFFF:04x}"


def _summarise_seed(rep: Path, folds, level: str) -> dict:
    crops = pd.concat([pd.read_parquet(_fold_dir(rep, f.name) / "predictions.parquet")
                       for f in folds], ignore_index=True)
    result = {}
    aggregated = {lvl: aggregate_probabilities(crops, lvl) for lvl in ("image", "well", "treatment")}
    for lvl, agg in aggregated.items():
        result[f"{lvl}_accuracy"] = float(agg["correct"].mean())
        result[f"n_{lvl}s"] = int(len(agg))
        write_csv(agg, rep / f"predictions_{lvl}.csv")
    final = aggregated[level]
    plot_confusion(confusion(final[ix.MOA], final["predicted"]),
                   f"{level}-level accuracy {result[f'{level}_accuracy']:.1%} over {len(final)} "
                   f"{level}s", rep / "confusion.png")
    # Accuracy after each epoch: the same aggregation on each epoch's test predictions.
    per_epoch = []
    stacks = {f.name: np.load(_fold_dir(rep, f.name) / "epoch_probs.npy") for f in folds}
    n_epochs = min(s.shape[0] for s in stacks.values())
    prob_cols = [c for c in crops.columns if c.startswith(PROB_PREFIX)]
    for e in range(n_epochs):
        epoch = crops.copy()
        epoch[prob_cols] = np.concatenate([stacks[f.name][e] for f in folds])
        per_epoch.append(float(aggregate_probabilities(epoch, level)["correct"].mean()))
    result["per_epoch_accuracy"] = per_epoch
    result["crop_accuracy"] = float((crops[prob_cols].to_numpy().argmax(1) == [
        prob_cols.index(PROB_PREFIX + m) for m in crops[ix.MOA].astype(str)]).mean())
    write_json(result, rep / "metrics.json")
    return result


def _summarise_runs(per_seed: list[dict], cfg: TrainConfig) -> dict:
    summary: dict = {"model": cfg.model, "weights": cfg.weights, "seeds": cfg.seeds,
                     "report_level": cfg.report_level, "n_seeds": len(per_seed)}
    for key in ("crop_accuracy", "image_accuracy", "well_accuracy", "treatment_accuracy"):
        vals = np.array([r[key] for r in per_seed])
        summary[key] = {"mean": float(vals.mean()), "sem": _sem(vals), "values": vals.tolist()}
    curves = np.array([r["per_epoch_accuracy"] for r in per_seed])
    summary["per_epoch_accuracy"] = {"mean": curves.mean(0).tolist(),
                                     "sem": [_sem(c) for c in curves.T]}
    summary["n_treatments"] = per_seed[0]["n_treatments"]
    return summary


def _sem(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def format_summary(summary: dict) -> str:
    """Accuracies as mean +- SEM over seeds, for the terminal."""
    lines = [f"{summary['model']} ({summary['weights']}), {summary['n_seeds']} seed(s):"]
    for key in ("treatment_accuracy", "well_accuracy", "image_accuracy", "crop_accuracy"):
        v = summary[key]
        lines.append(f"  {key.replace('_', ' '):<20}{v['mean']:.1%} +- {v['sem']:.1%}")
    return "\n".join(lines)
