"""The benchmark suite: every speed figure of cellmorph beside the bare model or the baseline
it replaces, in one table. All data are SYNTHETIC. About 7 1/2 to 9 minutes on 2 CPU cores
(--quick: about 6).

    bench/run_all [--repeats 3] [--quick] [--device cuda]

The baseline of the profiling figures is the bare forward of the timm model in a fresh
process, as a user's own script runs it. A run computes the same network faster (BatchNorm
folded, freed memory kept in the process); each step is timed on its own, and the pipeline is
compared with both the baseline and the network it runs.

Timings on a shared machine are noisy: every comparison interleaves its runs (bare, pipeline,
loop, bare, ...) and the table gives the median ratio with its range over the repeats.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from cellmorph import api
from cellmorph import schema as sc
from cellmorph.atomic import write_parquet
from cellmorph.backbones import create_backbone
from cellmorph.backbones.model_input import make_input_spec
from cellmorph.backbones.trunk import freeze, split_model
from cellmorph.cache import KEEP, TileCache, TileStore, build_tile_cache
from cellmorph.config import (
    PREPROCESS_PRESETS,
    AugmentConfig,
    PreprocessConfig,
    ProfileConfig,
    TrainConfig,
    load_config,
)
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.log import set_progress
from cellmorph.profiling.screen import make_embedder
from cellmorph.runtime import autocast, cpu_has_native_bf16, keep_freed_memory, resolve_runtime
from cellmorph.synth.bbbc021_synthetic import MOA_PHENOTYPES, synthesize_bbbc021
from cellmorph.training.trainer import FoldTrainer, compute_trunk_cache

HERE = Path(__file__).parent
BBBC021_CROPS, FOLDS, PAPER_EPOCHS = 1208 * 4, 38, 10
MODEL = "tf_efficientnet_lite0"  # the only ImageNet weights available offline
DEVICE = "cpu"  # set by --device


class Table:
    """Rows of figure, value and ratio, printed at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, value: str, baseline: str, ratio: str) -> None:
        self.rows.append((what, value, baseline, ratio))
        print(f"  {what}: {value} | {baseline} | {ratio}", flush=True)

    def print(self) -> None:
        widths = [max(len(r[i]) for r in [HEADER, *self.rows]) for i in range(4)]
        for row in [HEADER, tuple("-" * w for w in widths), *self.rows]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


HEADER = ("figure", "value", "baseline", "ratio (median, range)")


def spread(ratios: list[float]) -> str:
    """``1.02 (0.97-1.05)``: the median and range of repeated ratios."""
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def synth_index(root: Path, *, plates: list[str] | None, size: tuple[int, int], sites: int,
                moas: list[str] | None = None, controls: int = 2) -> Path:
    synthesize_bbbc021(root, moas=moas or sorted(MOA_PHENOTYPES), plates=plates, size=size,
                       sites=sites, max_concentrations=None if plates else 2,
                       controls_per_plate=controls, progress=False)
    return write_parquet(index_bbbc021(root, moa_subset=True), root / "index.parquet")


# ---------------------------------------------------------------- profiling
def bare_forward(embedder, tiles: np.ndarray, batch: int) -> float:
    """Seconds of ``model(x)`` alone on input already prepared (after a warm-up)."""
    per = max(1, batch // tiles.shape[1])
    inputs = [embedder.to_model_input(torch.from_numpy(np.ascontiguousarray(tiles[i:i + per])))
              for i in range(0, len(tiles), per)]
    embedder.forward_input(inputs[0])
    synchronize(embedder.runtime.device)
    start = time.perf_counter()
    for x in inputs:
        embedder.forward_input(x)
    synchronize(embedder.runtime.device)
    return time.perf_counter() - start


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer sees it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_tiles(run: Path) -> tuple[list[str], np.ndarray]:
    """The channels and kept tiles of the first plate of a profiling run's cache."""
    cache = TileCache.open(next((run / "cache").iterdir()))
    plate = cache.plates[0]
    return list(cache.channels), np.array(cache.tiles(plate)[cache.table(plate)[KEEP].to_numpy()])


def timm_embedder(cfg: ProfileConfig, channels: list[str], device: str):
    """The run's model as timm builds it (no BatchNorm folded), for the bare forward."""
    return make_embedder(cfg.model_copy(update={"fold_batchnorm": False}), channels,
                         resolve_runtime(device, "auto"))


def _child_bare(run: str, device: str) -> None:
    """Run in a fresh process (glibc's default allocator settings, as a user's own script
    has): print the seconds of the bare forward of the timm model on a run's tiles."""
    cfg = load_config(Path(run) / "config.yaml", ProfileConfig)
    channels, tiles = run_tiles(Path(run))
    embedder = timm_embedder(cfg, channels, device)
    print(json.dumps({"seconds": bare_forward(embedder, tiles, cfg.batch_size)}))


def fresh_bare_forward(run: Path) -> float:
    code = ("import sys; sys.path.insert(0, 'bench'); from run_all import _child_bare; "
            f"_child_bare({str(run)!r}, {DEVICE!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=HERE.parent).stdout.strip().splitlines()[-1]
    return json.loads(out)["seconds"]


def profiling(table: Table, work: Path, repeats: int, size: tuple[int, int]) -> tuple[float, float]:
    """Pipeline, inference loop and the network as cellmorph runs it, against the bare forward
    of the timm model in a fresh process; returns both forwards' seconds per tile."""
    index = synth_index(work / "p", plates=["Week1_22123"], size=size, sites=4)
    n_fields = len(api.read_index(index))
    settings = dict(model=MODEL, preprocess=PreprocessConfig(grid=(2, 2)), batch_size=48,
                    progress=False, device=DEVICE)
    # A warm-up run (not timed) gives the tiles and the model for the bare forward, and
    # fills a shared tile cache for the runs that find their tiles made (cache_dir).
    shared = work / "shared_cache"
    result = api.profile(index=index, output=work / "prof_warmup", **settings)
    api.profile(index=index, output=work / "prof_cached_warmup", cache_dir=shared, **settings)
    channels, tiles = run_tiles(work / "prof_warmup")
    # The baseline is the timm model's forward in a fresh process, as a user's own script
    # runs it. A run also folds BatchNorm (fold_batchnorm) and keeps freed memory in the
    # process (as here): each is timed alone below.
    keep_freed_memory()
    timm_model = timm_embedder(result.config, channels, DEVICE)
    network = make_embedder(result.config, channels, resolve_runtime(DEVICE, "auto"))
    fresh, kept, nets, pipeline, cached, loops = [], [], [], [], [], []
    for r in range(repeats):
        # Interleaved, so that drift on a shared machine hits both sides of a ratio alike.
        fresh.append(fresh_bare_forward(work / "prof_warmup"))
        kept.append(bare_forward(timm_model, tiles, 48))
        nets.append(bare_forward(network, tiles, 48))
        start = time.perf_counter()
        api.profile(index=index, output=work / f"prof{r}", **settings)
        pipeline.append(time.perf_counter() - start)
        start = time.perf_counter()
        api.profile(index=index, output=work / f"prof_cached{r}", cache_dir=shared, **settings)
        cached.append(time.perf_counter() - start)
        start = time.perf_counter()
        network(tiles, batch_size=48)
        loops.append(time.perf_counter() - start)
    n = len(tiles)

    def rate(seconds: list[float]) -> str:
        return f"{n / statistics.median(seconds):.1f} tiles/s"

    def ratios(fast: list[float], slow: list[float]) -> str:
        return spread([s / f for f, s in zip(fast, slow, strict=True)])

    base = f"bare forward {rate(fresh)}"
    table.add(f"bare forward, {MODEL}, freed memory kept (keep_freed_memory)", rate(kept),
              base, ratios(kept, fresh))
    table.add("network as a run computes it: + BatchNorm folded (fold_batchnorm)", rate(nets),
              base, ratios(nets, fresh))
    table.add(f"profiling pipeline, {n_fields} fields {size[0]}x{size[1]} -> {n} tiles "
              "(read, preprocess, cache, infer, aggregate, write)", rate(pipeline), base,
              ratios(pipeline, fresh))
    table.add("profiling pipeline against the network it runs", rate(pipeline),
              f"network {rate(nets)}", ratios(pipeline, nets))
    table.add("profiling pipeline, tiles already cached (cache_dir shared with an earlier "
              "run)", rate(cached), f"network {rate(nets)}", ratios(cached, nets))
    table.add("profiling inference loop alone (uint8 tiles -> features)", rate(loops),
              f"network {rate(nets)}", ratios(loops, nets))
    return statistics.median(fresh) / n, statistics.median(nets) / n


def preprocessing_full_size(table: Table, work: Path, repeats: int,
                            network_per_tile: float) -> None:
    """Decoding and preprocessing alone on fields of BBBC021's size (3 stains of 1024x1280,
    16-bit), against the network's time for the tiles they give: the work that the network
    must not wait for (a GPU runs the network many times faster than this CPU). With
    --device cuda the arithmetic runs on the GPU, as in a GPU run, and the CPU decodes."""
    index = api.read_index(synth_index(work / "f", plates=["Week1_22123"], size=(1024, 1280),
                                       sites=4))
    cfg = PreprocessConfig(grid=(2, 2))
    seconds = []
    for r in range(repeats):
        start = time.perf_counter()
        cache = build_tile_cache(index, cfg, work / f"fcache{r}", tile_size=224, progress=False,
                                 device=DEVICE)
        seconds.append((time.perf_counter() - start) / len(index))
    per_field = statistics.median(seconds)
    tiles = sum(len(cache.table(p)) for p in cache.plates) / len(index)
    network = network_per_tile * tiles
    table.add(f"preprocessing alone at BBBC021 size, {len(index)} fields of 3 x 1024x1280 "
              f"16-bit -> {tiles:.0f} tiles of 224 each (decode, illumination, rescale, tile, "
              f"resize, cache), arithmetic on {DEVICE}", f"{per_field * 1000:.0f} ms/field",
              f"network on those tiles {network * 1000:.0f} ms",
              spread([network / s for s in seconds]))


def _child_profile(index: str, out: str, device: str) -> None:
    """Run in a child process: profile, print wall seconds, tiles and peak memory (JSON)."""
    start = time.perf_counter()
    result = api.profile(index=index, output=out, model=MODEL, progress=False, device=device,
                         preprocess={"grid": [2, 2]})
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "tiles": result.timings["tiles_embedded"],
                      "peak_mb": peak_kb / 1024}))


def profiling_scaling(table: Table, work: Path, bare_per_tile: float,
                      network_per_tile: float) -> None:
    plates = ["Week1_22123", "Week1_22141", "Week1_22161", "Week2_24121"]
    index = synth_index(work / "s", plates=plates, size=(256, 320), sites=2)
    full = api.read_index(index)
    rows = []
    for n in (1, 2, 4):
        sub = full[full[sc.PLATE].isin(plates[:n])]
        path = write_parquet(sub, work / f"scale{n}.parquet")
        code = ("import sys; sys.path.insert(0, 'bench'); from run_all import _child_profile; "
                f"_child_profile({str(path)!r}, {str(work / f'scale{n}')!r}, {DEVICE!r})")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=HERE.parent).stdout.strip().splitlines()[-1]
        rows.append((n, len(sub), json.loads(out)))
    per_image = [r[2]["seconds"] / r[1] for r in rows]
    table.add("profiling cost per image, 1 / 2 / 4 plates ("
              + " / ".join(str(r[1]) for r in rows) + " images)",
              " / ".join(f"{p * 1000:.0f}" for p in per_image) + " ms",
              "1 plate", " / ".join(f"{p / per_image[0]:.2f}" for p in per_image))
    # What one more image costs once the fixed costs (start-up, model, writing the wide
    # tables) are paid: the slope from 1 to 4 plates, against the bare forward of its tiles.
    first, last = rows[0][2], rows[-1][2]
    marginal = (last["seconds"] - first["seconds"]) / (last["tiles"] - first["tiles"])
    table.add("profiling marginal cost per tile (slope from 1 to 4 plates)",
              f"{marginal * 1000:.0f} ms", f"bare forward {bare_per_tile * 1000:.0f} ms "
              f"(network {network_per_tile * 1000:.0f} ms)",
              f"{bare_per_tile / marginal:.2f} (against the network: "
              f"{network_per_tile / marginal:.2f})")
    table.add("profiling peak memory, 1 / 2 / 4 plates",
              " / ".join(f"{r[2]['peak_mb']:.0f}" for r in rows) + " MB", "1 plate",
              " / ".join(f"{r[2]['peak_mb'] / rows[0][2]['peak_mb']:.2f}" for r in rows))


# ---------------------------------------------------------------- Pawlowski's workload
PAWLOWSKI_FIELDS, PAWLOWSKI_CORE_MINUTES = 2384, 22 * 16  # BBBC021's MoA subset; 22 min, 16 cores


def _child_pawlowski(index: str, out: str, device: str, tiles: str) -> None:
    """Run in a child process: profile as Pawlowski et al. did (InceptionV3 at 299 pixels,
    each stain alone), with tiles or cells; print wall seconds, fields, crops, peak memory."""
    start = time.perf_counter()
    result = api.profile(index=index, output=out, model="inception_v3", weights="random",
                         progress=False, device=device, channel_mode="greyscale",
                         preprocess={"tiles": tiles, "grid": [2, 2]})
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "fields": len(result.images),
                      "crops": result.timings["tiles_embedded"], "peak_mb": peak_kb / 1024}))


def pawlowski_workload(table: Table, work: Path, quick: bool) -> None:
    """Full-size fields (3 stains of 1024x1280, 16-bit), InceptionV3 at 299 pixels with random
    weights (the same speed as ImageNet's), greyscale mode, end to end from the image files:
    fields per second with 2x2 tiles and with cell crops (96 pixels, at most 50 a field),
    extrapolated to BBBC021's MoA subset beside the paper's 22 minutes on 16 cores."""
    plates = ["Week1_22123", "Week1_22141", "Week1_22161", "Week2_24121"]
    index = api.read_index(synth_index(work / "p", plates=plates, size=(1024, 1280),
                                       sites=1 if quick else 2))
    runs = {}
    for name, tiles, n_plates in (("tiles", "grid", 1), ("cells", "cells", 1),
                                  ("cells2", "cells", 2), ("cells4", "cells", 4)):
        sub = write_parquet(index[index[sc.PLATE].isin(plates[:n_plates])],
                            work / f"p{name}.parquet")
        code = ("import sys; sys.path.insert(0, 'bench'); from run_all import _child_pawlowski; "
                f"_child_pawlowski({str(sub)!r}, {str(work / f'p{name}')!r}, {DEVICE!r}, "
                f"{tiles!r})")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=HERE.parent).stdout.strip().splitlines()[-1]
        runs[name] = json.loads(out)
    cores = 1 if DEVICE == "cuda" else torch.get_num_threads()
    for name in ("tiles", "cells"):
        r = runs[name]
        rate = r["fields"] / r["seconds"]
        core_minutes = PAWLOWSKI_FIELDS / rate / 60 * cores
        table.add(f"Pawlowski's workload end to end, {name}: {r['fields']} fields of 3 x "
                  f"1024x1280, InceptionV3 at 299 (greyscale, {r['crops'] / r['fields']:.0f} "
                  f"{'tiles' if name == 'tiles' else 'cells'} a field)",
                  f"{rate:.2f} fields/s; BBBC021's {PAWLOWSKI_FIELDS} fields in "
                  f"{core_minutes:.0f} {'GPU-' if DEVICE == 'cuda' else 'core-'}minutes",
                  f"paper: {PAWLOWSKI_CORE_MINUTES} core-minutes (22 min on 16 cores)",
                  f"{PAWLOWSKI_CORE_MINUTES / core_minutes:.1f}x")
    per_field = {k: runs[k]["seconds"] / runs[k]["fields"] for k in runs}
    table.add("cells' cost per field against tiles' (same fields, end to end)",
              f"{per_field['cells'] * 1000:.0f} ms", f"tiles {per_field['tiles'] * 1000:.0f} ms",
              f"{per_field['cells'] / per_field['tiles']:.2f}")
    peaks = [runs[k]["peak_mb"] for k in ("cells", "cells2", "cells4")]
    table.add("cells: peak memory, 1 / 2 / 4 plates ("
              + " / ".join(str(runs[k]["fields"]) for k in ("cells", "cells2", "cells4"))
              + " fields)", " / ".join(f"{p:.0f}" for p in peaks) + " MB", "1 plate",
              " / ".join(f"{p / peaks[0]:.2f}" for p in peaks))


# ---------------------------------------------------------------- training
def training_store(work: Path, size: int) -> TileStore:
    index = synth_index(work / "t", plates=None, size=(2 * size, int(2.5 * size)), sites=1)
    cfg = PREPROCESS_PRESETS["kensert"].model_copy(update={"tile_size": size})
    return TileStore(build_tile_cache(api.read_index(index), cfg, work / "tcache",
                                      tile_size=size, progress=False))


def _model(classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_backbone(MODEL, "random", num_classes=classes)
    return model.to(resolve_runtime(DEVICE, "auto").device, memory_format=torch.channels_last)


def bare_step(model, spec, store, positions, labels, batch, runtime) -> float:
    """Crops/s of forward + backward + step on batches prepared in advance."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    crit = torch.nn.CrossEntropyLoss()
    device = runtime.device
    batches = [(spec(torch.from_numpy(store.take(positions[i:i + batch])).to(device)),
                torch.from_numpy(labels[positions[i:i + batch]]).long().to(device))
               for i in range(0, len(positions), batch)]
    model.train()

    def epoch(items) -> None:
        for x, y in items:
            with autocast(runtime.device, runtime.precision):
                loss = crit(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch(batches[:1])
    synchronize(device)
    start = time.perf_counter()
    epoch(batches)
    synchronize(device)
    return len(positions) / (time.perf_counter() - start)


def training(table: Table, work: Path, repeats: int, crops: int, depth) -> None:
    runtime = resolve_runtime(DEVICE, "auto")
    store = training_store(work, 224)
    rng = np.random.default_rng(0)
    positions = rng.choice(len(store), size=min(crops, len(store)), replace=False)
    labels = rng.integers(0, 12, len(store))
    cfg = TrainConfig(index=work / "i", output=work / "o", model=MODEL, weights="random",
                      preset="fast", epochs=1, device=DEVICE)
    hyper = cfg.hyper()

    def fit_rate(trainer) -> float:
        start = time.perf_counter()
        trainer.fit(store, labels, positions, np.array([], int), 12, 0)
        return len(positions) / (time.perf_counter() - start)

    model = _model(12)
    spec = make_input_spec(model, ["DAPI", "Tubulin", "Actin"], cfg.rgb_map, runtime.device)
    trunk, rest = split_model(model, 0)
    full = FoldTrainer(model, trunk, rest, spec, hyper, AugmentConfig(intensity=0.1), runtime)
    fit_rate(full)  # warm-up
    pipe, bare = [], []
    for _ in range(repeats):
        pipe.append(fit_rate(full))
        bare.append(bare_step(model, spec, store, positions, labels, hyper.batch_size,
                              runtime))
    table.add(f"training pipeline, {MODEL} at 224 px (cache -> loader -> augment -> step)",
              f"{statistics.median(pipe):.1f} crops/s",
              f"bare train step {statistics.median(bare):.1f} crops/s",
              spread([p / b for p, b in zip(pipe, bare, strict=True)]))
    # Cached trunk at the depth of configs/bbbc021-loco-cpu.yaml, against full fine-tuning.
    cached_model = _model(12)
    trunk, rest = split_model(cached_model, depth)
    freeze(trunk)
    for p in rest.parameters():
        p.requires_grad_(True)
    speedups, cache_s, cached_rates = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        cache = compute_trunk_cache(trunk, store, positions, spec, runtime, progress_bar=False)
        cache_s.append((time.perf_counter() - start) / len(positions))
        trainer = FoldTrainer(cached_model, trunk, rest, spec, hyper, AugmentConfig(), runtime,
                              trunk_cache=cache)
        fit_rate(trainer)
        cached_rates.append(fit_rate(trainer))
        full_rate = fit_rate(full)
        train_crops = FOLDS * PAPER_EPOCHS * BBBC021_CROPS * (FOLDS - 1) / FOLDS
        speedups.append((train_crops / full_rate)
                        / (cache_s[-1] * BBBC021_CROPS + train_crops / cached_rates[-1]))
    full_h = FOLDS * PAPER_EPOCHS * BBBC021_CROPS * (FOLDS - 1) / FOLDS / statistics.median(pipe)
    cached_h = full_h / statistics.median(speedups)
    cost = _accuracy_cost(depth)
    table.add(f"full BBBC021 LOCO (38 folds x 10 epochs), cached trunk freeze {depth} "
              "(configs/bbbc021-loco-cpu.yaml)", f"{cached_h / 3600:.2f} h extrapolated",
              f"full fine-tuning {full_h / 3600:.1f} h", spread(speedups) + f"; {cost}")


def _accuracy_cost(depth) -> str:
    path = HERE / "cached_trunk.json"
    if not path.is_file():
        return "accuracy cost: run bench/cached_trunk.py"
    runs = json.loads(path.read_text())["runs"]
    costs = [r["accuracy_cost_points"] for r in runs
             if str(r["depth"]) == str(depth) and "accuracy_cost_points" in r]
    if not costs:
        return "accuracy cost: not measured for this depth"
    return f"accuracy cost {statistics.mean(costs):+.1f} points (bench/cached_trunk.json)"


def loco_scaling(table: Table, work: Path, depth) -> None:
    index = synth_index(work / "l", plates=None, size=(128, 160), sites=1)
    compounds = sorted(set(sc.treatments(api.read_index(index))[sc.COMPOUND]))
    settings = dict(model=MODEL, preset="fast", epochs=1, progress=False, device=DEVICE,
                    cache_dir=work / "lcache",
                    preprocess={"illumination": False, "anscombe": True,
                                "control_normalise": True, "rescale": "image", "grid": [2, 2],
                                "tile_size": 64})
    times = {"full": [], "cached": []}
    counts = (2, 4, 8)
    for n in counts:
        for kind in ("full", "cached"):
            extra = ({"freeze_stages": depth, "cached_trunk": True} if kind == "cached" else {})
            start = time.perf_counter()
            api.train(index=index, output=work / f"loco-{kind}-{n}", folds=compounds[:n],
                      **settings, **extra)
            times[kind].append(time.perf_counter() - start)
    for kind in ("full", "cached"):
        per_fold = [t / n for t, n in zip(times[kind], counts, strict=True)]
        table.add(f"LOCO cost per fold, {kind}, 2 / 4 / 8 folds (64 px, 1 epoch)",
                  " / ".join(f"{p:.1f}" for p in per_fold) + " s", "2 folds",
                  " / ".join(f"{p / per_fold[0]:.2f}" for p in per_fold))


def main() -> None:
    global DEVICE
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the GPU figures)")
    p.add_argument("--only", choices=["pawlowski"], help="run one group of figures")
    args = p.parse_args()
    DEVICE = args.device
    set_progress(False)
    depth = yaml.safe_load((HERE.parent / "configs" / "bbbc021-loco-cpu.yaml").read_text())[
        "freeze_stages"]
    cpu = platform.processor() or platform.machine()
    runtime = resolve_runtime(DEVICE, "auto")
    where = torch.cuda.get_device_name() if runtime.device.type == "cuda" else \
        f"{torch.get_num_threads()} CPU threads, {cpu}, native bf16: {cpu_has_native_bf16()}"
    print(f"cellmorph benchmarks on {where}, precision auto = {runtime.precision_name}; "
          f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}; SYNTHETIC data", flush=True)
    table = Table()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only == "pawlowski":
            pawlowski_workload(table, work, args.quick)
            print(f"\nall figures ({time.perf_counter() - start:.0f} s):")
            table.print()
            return
        size = (256, 320) if args.quick else (512, 640)
        per_tile = profiling(table, work, args.repeats, size)
        preprocessing_full_size(table, work, args.repeats, per_tile[1])
        training(table, work, max(2, args.repeats - 1), 48 if args.quick else 96, depth)
        profiling_scaling(table, work, *per_tile)
        pawlowski_workload(table, work, args.quick)
        loco_scaling(table, work, depth)
    print(f"\nall figures ({time.perf_counter() - start:.0f} s):")
    table.print()


if __name__ == "__main__":
    main()
