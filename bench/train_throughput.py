"""Training throughput of the fine-tuning pipeline against the bare model train step.

    python bench/train_throughput.py [--model resnet50] [--size 224] [--crops 256]

Measures on SYNTHETIC crops from the uint8 tile cache:
1. training crops/s of the pipeline (DataLoader from the cache, augmentation on the batch,
   forward, backward, optimiser step) and of the bare train step on the same tensors, as a
   ratio;
2. the wall time of a full BBBC021 LOCO run (38 folds x 10 epochs, about 4,700 training
   crops a fold) extrapolated from the measured rate;
3. the cached-trunk mode: one trunk pass over all crops and 8 dihedral copies, then training
   only the remaining stages, and its speed-up for the 38 folds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cellmorph.atomic import write_parquet
from cellmorph.backbones import create_backbone
from cellmorph.cache import TileStore, build_tile_cache
from cellmorph.config import PREPROCESS_PRESETS, AugmentConfig, TrainConfig
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.runtime import (
    Runtime,
    autocast,
    freeze,
    make_input_spec,
    resolve_device,
    resolve_precision,
    split_model,
)
from cellmorph.synth.bbbc021 import MOA_PHENOTYPES, synthesize_bbbc021
from cellmorph.training.trainer import FoldTrainer, compute_trunk_cache

BBBC021_CROPS = 1208 * 4  # images x 2x2 crops (a few are dropped as empty)
FOLDS, EPOCHS = 38, 10


def build_store(tmp: Path, size: int) -> TileStore:
    root = tmp / "synth"
    synthesize_bbbc021(root, moas=sorted(MOA_PHENOTYPES), size=(2 * size, int(2.5 * size)),
                       max_concentrations=1, controls_per_plate=2, progress=False)
    index = index_bbbc021(root, image_csv=root / "BBBC021_v1_image.csv", moa_subset=True)
    write_parquet(index, tmp / "index.parquet")
    cfg = PREPROCESS_PRESETS["kensert"].model_copy(update={"tile_size": size})
    return TileStore(build_tile_cache(index, cfg, tmp / "cache", tile_size=size, progress=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--crops", type=int, default=192, help="training crops measured")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--freeze", type=int, default=None,
                   help="stages in the cached trunk (default: all but the last two)")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    runtime = Runtime(device, precision)
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp), args.size)
        n_classes = 12
        rng = np.random.default_rng(0)
        positions = rng.choice(len(store), size=min(args.crops, len(store)), replace=False)
        labels = rng.integers(0, n_classes, len(store))
        cfg = TrainConfig(index=Path(tmp) / "index.parquet", output=Path(tmp) / "o",
                          model=args.model, weights="random", preset="fast",
                          batch_size=args.batch, epochs=1)
        torch.manual_seed(0)
        model = create_backbone(args.model, "random", num_classes=n_classes).to(device)
        model = model.to(memory_format=torch.channels_last)
        spec = make_input_spec(model, ["DAPI", "Tubulin", "Actin"], cfg.rgb_map, device)
        print(f"{args.model} at {args.size}px on {device} ({torch.get_num_threads()} threads), "
              f"precision {precision or 'fp32'}, batch {args.batch}, SYNTHETIC crops")

        def timed_fit(trainer: FoldTrainer) -> float:
            t = time.perf_counter()
            trainer.fit(store, labels, positions, np.array([], int), n_classes, 0)
            return len(positions) / (time.perf_counter() - t)

        trunk, rest = split_model(model, 0)
        full_trainer = FoldTrainer(model, trunk, rest, spec, cfg.hyper(), AugmentConfig(
            intensity=0.1), runtime)
        timed_fit(full_trainer)  # warm-up: kernels for every batch shape
        pipeline = bare = 0.0
        for _ in range(args.repeats):  # alternate and keep the best: timings here are noisy
            pipeline = max(pipeline, timed_fit(full_trainer))
            bare = max(bare, bare_train_rate(model, store, positions, labels, spec, args.batch,
                                             precision, device))
        print(f"pipeline train: {pipeline:7.1f} crops/s  (cache -> DataLoader -> augment -> step)")
        print(f"bare train step:{bare:7.1f} crops/s  (same tensors, already on the device)")
        print(f"ratio pipeline / bare: {pipeline / bare:.2f}")
        full = FOLDS * EPOCHS * BBBC021_CROPS * (FOLDS - 1) / FOLDS / pipeline
        print(f"full LOCO (38 folds x 10 epochs x ~{BBBC021_CROPS} crops): "
              f"{full / 3600:.1f} h extrapolated")

        # Cached trunk: first `freeze` stages computed once for every crop and dihedral copy.
        stages = args.freeze if args.freeze is not None else (
            len(model.blocks) - 2 if hasattr(model, "blocks") else 2)
        trunk, rest = split_model(model, stages)
        freeze(trunk)
        t = time.perf_counter()
        cache = compute_trunk_cache(trunk, store, positions, spec, runtime, progress_bar=False)
        per_crop_cache = (time.perf_counter() - t) / len(positions)
        cached_trainer = FoldTrainer(model, trunk, rest, spec, cfg.hyper(), AugmentConfig(),
                                     runtime, trunk_cache=cache)
        timed_fit(cached_trainer)
        cached = max(timed_fit(cached_trainer) for _ in range(args.repeats))
        cached_total = (per_crop_cache * BBBC021_CROPS
                        + FOLDS * EPOCHS * BBBC021_CROPS * (FOLDS - 1) / FOLDS / cached)
        print(f"cached trunk ({stages} stages): {cached:.1f} crops/s training, "
              f"{per_crop_cache * 1000:.0f} ms/crop to cache 8 copies")
        print(f"full LOCO with cached trunk: {cached_total / 3600:.2f} h extrapolated; "
              f"speed-up x{full / cached_total:.1f} over full fine-tuning")


def bare_train_rate(model, store, positions, labels, spec, batch, precision, device) -> float:
    """Crops/s of forward + backward + step on batches prepared in advance."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    crit = torch.nn.CrossEntropyLoss()
    batches = []
    for i in range(0, len(positions), batch):
        pos = positions[i : i + batch]
        x = spec(torch.from_numpy(store.take(pos)).to(device))
        batches.append((x, torch.from_numpy(labels[pos]).long().to(device)))
    model.train()

    def epoch(items) -> None:
        for x, y in items:
            with autocast(device, precision):
                loss = crit(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch(batches[:1])
    t = time.perf_counter()
    epoch(batches)
    return len(positions) / (time.perf_counter() - t)


if __name__ == "__main__":
    main()
