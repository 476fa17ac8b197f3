"""``cellmorph explain RUN_DIR``: activation maximisation and Grad-CAM from a run folder.

For a fine-tuning run: the chosen filters of the pretrained network (the seed's initial
weights) beside the same filters after fine-tuning (a fold's model), as in Kensert et al.'s
figure 5; and Grad-CAM maps over the most confidently and correctly predicted crops of each
MoA, each explained by the fold model that predicted it (a model that never saw its compound).
For a profiling run: the frozen network's filters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from cellmorph import schema as sc
from cellmorph.backbones import create_backbone, data_config, default_input_size
from cellmorph.backbones.model_input import make_input_spec
from cellmorph.cache import TileCache, cache_key
from cellmorph.config import ProfileConfig, TrainConfig, load_config
from cellmorph.datasets.index import read_index
from cellmorph.errors import CellmorphError
from cellmorph.interpret.actmax import ActMax, active_channels, default_layers, maximise
from cellmorph.interpret.gradcam import grad_cam, overlay
from cellmorph.log import get_logger, progress
from cellmorph.records import ShortRepr
from cellmorph.runs import read_locations
from cellmorph.runtime import resolve_device
from cellmorph.training.fold_jobs import fold_dir, load_initial
from cellmorph.training.weak import run_models

log = get_logger(__name__)


@dataclass(repr=False)
class CropExplanation(ShortRepr):
    """One crop, what was predicted for it, and where the network looked."""

    moa: str
    treatment: str
    fold: str
    probability: float
    image: np.ndarray  # (H, W, 3) in [0, 1]
    heat: np.ndarray  # (H, W) in [0, 1]


@dataclass(repr=False)
class ExplainResult(ShortRepr):
    """Activation-maximisation panels and Grad-CAM crops of a run."""

    model: str
    actmax: dict[str, list[ActMax]] = field(default_factory=dict)  # network -> filters
    crops: list[CropExplanation] = field(default_factory=list)
    synthetic: bool = False


def _run_record(run: Path) -> dict:
    """The run's record (kind and fingerprint, see :mod:`cellmorph.runs`)."""
    try:
        record = json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or "kind" not in record:
        raise CellmorphError(f"{run} is not a cellmorph run folder (no run.json); give the "
                             "output folder of `cellmorph train` or `cellmorph profile`")
    return record


def _model_from(path: Path, name: str, n_classes: int) -> torch.nn.Module:
    if not path.is_file():
        raise CellmorphError(f"{path} not found: the run kept no model there (keep_models in "
                             "the train config), or it was deleted; rerun train with "
                             "keep_models: all to explain it")
    model = create_backbone(name, "random", num_classes=n_classes)
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as exc:  # safetensors and torch raise several types for a damaged file
        raise CellmorphError(f"{path}: a damaged model file ({exc}); delete that fold's folder "
                             "and rerun train to redo it") from None
    return model.eval()


def explain_run(run: Path | str, *, layers: list[str] | None = None, filters: int = 2,
                size: int = 128, steps: int = 128, crops_per_moa: int = 2, seed: int = 0,
                device: str = "auto", progress_bar: bool = True) -> ExplainResult:
    """Activation maximisation (pretrained beside fine-tuned) and Grad-CAM of a run folder."""
    run = Path(run)
    record = _run_record(run)
    kind = record["kind"]
    dev = resolve_device(device)
    if kind == "profile":
        cfg = load_config(run / "config.yaml", ProfileConfig)
        torch.manual_seed(cfg.seed)
        networks = {"pretrained": create_backbone(cfg.model, cfg.weights, num_classes=0)}
        index = read_index(cfg.index) if Path(cfg.index).is_file() else None
        result = ExplainResult(cfg.model, synthetic=sc.is_synthetic(index))
    elif (cfg := load_config(run / "config.yaml", TrainConfig)).weak_label:
        # No MoA predicted, so no Grad-CAM of one: the filters before and after training.
        found = run_models(run)
        n_classes = len(json.loads((run / "training.json").read_text())["classes"])
        networks = {"pretrained": load_initial(
                        cfg, n_classes, found.seed, run / f"seed{found.seed}" / "init.safetensors"
                    ).eval(),
                    f"weakly supervised ({cfg.label})": _model_from(found.weights, cfg.model,
                                                                    n_classes)}
        index = read_index(cfg.index) if Path(cfg.index).is_file() else None
        result = ExplainResult(cfg.model, synthetic=sc.is_synthetic(index))
    else:
        seed_dir = run / f"seed{cfg.seeds[0]}"
        crops = _crop_predictions(seed_dir)
        classes = sc.classes_of(crops)
        # The folds whose models the run kept (keep_models): the filters are the first's, the
        # Grad-CAM crops are chosen among theirs.
        kept = [f for f in sorted(crops[sc.FOLD].unique())
                if (fold_dir(seed_dir, f) / "model.safetensors").is_file()]
        first = kept[0] if kept else sorted(crops[sc.FOLD].unique())[0]  # absent: says so
        crops = crops[crops[sc.FOLD].isin(kept)] if kept else crops
        networks = {
            "pretrained": load_initial(cfg, len(classes), cfg.seeds[0],
                                       seed_dir / "init.safetensors").eval(),
            f"fine-tuned (fold {first})": _model_from(
                fold_dir(seed_dir, first) / "model.safetensors", cfg.model, len(classes))}
        result = ExplainResult(cfg.model, synthetic=sc.is_synthetic(crops))
        # The run's tiles were preprocessed on the kind of device it trained on.
        trained_on = record.get("fingerprint", {}).get("device") or "cpu"
        result.crops = _explain_crops(cfg, seed_dir, crops, classes, crops_per_moa, dev,
                                      trained_on)
    reference = next(iter(networks.values()))
    norm = data_config(reference)
    chosen_layers = layers or default_layers(reference)
    plan = [(layer, c) for layer in chosen_layers
            for c in active_channels(reference, layer, filters, mean=norm["mean"],
                                     std=norm["std"], size=size, seed=seed, device=dev)]
    for name, model in networks.items():
        result.actmax[name] = [
            maximise(model, layer, channel, mean=norm["mean"], std=norm["std"], size=size,
                     steps=steps, seed=seed, device=dev)
            for layer, channel in progress(plan, desc=f"activation maximisation ({name})",
                                           enabled=progress_bar)]
    return result


def _crop_predictions(seed_dir: Path) -> pd.DataFrame:
    parts = sorted((seed_dir / "folds").glob("*/predictions.parquet"))
    if not parts:
        raise CellmorphError(f"{seed_dir} holds no finished fold; train first")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def _explain_crops(cfg: TrainConfig, seed_dir: Path, crops: pd.DataFrame, classes: list[str],
                   per_moa: int, device: torch.device,
                   preprocessed_on: str) -> list[CropExplanation]:
    """Grad-CAM of the most confident correct crops of each MoA, by their own fold models."""
    index = read_index(cfg.index)
    tile_size = cfg.preprocess.input_size(default_input_size(cfg.model))
    folder = Path(cfg.cache_dir or cfg.output / "cache") / cache_key(
        index, cfg.preprocess, tile_size, "cuda" if preprocessed_on == "cuda" else "cpu",
        read_locations(cfg, index))
    if not (folder / "settings.json").is_file():
        log.warning("the run's tile cache %s is gone; no Grad-CAM crops (rerun train to "
                    "rebuild it)", folder)
        return []
    cache = TileCache.open(folder)
    truth = crops[sc.MOA].astype(str)
    probs = crops[sc.prob_columns(crops)].to_numpy()
    p_true = probs[np.arange(len(crops)), [classes.index(m) for m in truth]]
    crops = crops.assign(_p=p_true, _correct=sc.predicted_classes(crops) == truth.to_numpy())
    chosen = (crops[crops["_correct"]].sort_values("_p", ascending=False)
              .groupby(sc.MOA, sort=True).head(per_moa))
    models: dict[str, torch.nn.Module] = {}
    out = []
    for _, row in chosen.iterrows():
        fold = row[sc.FOLD]
        if fold not in models:
            models[fold] = _model_from(fold_dir(seed_dir, fold) / "model.safetensors",
                                       cfg.model, len(classes)).to(device)
        model = models[fold]
        spec = make_input_spec(model, cache.channels, cfg.rgb_map, device,
                               channels_last=False)
        tile = torch.from_numpy(np.array(  # a writable copy of the memory-mapped tile
            cache.tiles(row[sc.PLATE])[int(row["Metadata_PlateTile"])]))[None].to(device)
        rgb = torch.einsum("kc,nchw->nkhw", spec.mixing, tile.float() / 255.0)[0]
        heat = grad_cam(model, spec(tile), [classes.index(str(row[sc.MOA]))])[0]
        out.append(CropExplanation(str(row[sc.MOA]), str(row[sc.TREATMENT]), str(fold),
                                   float(row["_p"]), rgb.permute(1, 2, 0).cpu().numpy(), heat))
    return out


def overlays(result: ExplainResult) -> list[np.ndarray]:
    """Each explained crop with its heat map laid over it."""
    return [overlay(np.clip(c.image / max(float(c.image.max()), 1e-6), 0, 1), c.heat)
            for c in result.crops]
