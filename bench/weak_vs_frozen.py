"""Frozen ImageNet features, a network trained on the screen's own weak labels, and the
leave-one-compound-out fold models' embeddings, side by side on one SYNTHETIC BBBC021 screen
(12 MoAs): NSC, NSCB and mAP (MoA consistency) of each, with the spread over seeds and the
wall time. The same preprocessing, tile cache, evaluation and seeds for all.

    .venv/bin/python bench/weak_vs_frozen.py [--seeds 0 1] [--epochs 4] [--size 256 320]
    .venv/bin/python bench/weak_vs_frozen.py --bbbc021-sized --size 128 160 --epochs 5

About 30 minutes on 2 CPU cores. The networks are EfficientNet-Lite0 with ImageNet weights
(offline); both trained arms fine-tune stages 5-7 and the head on a cached trunk (stem and
stages 1-4 frozen), with the `fast` preset, for the same number of epochs:

- frozen: `cellmorph profile` (greyscale per stain, as Pawlowski et al.); no seed enters it.
- weak: `cellmorph train --label compound` (plate-balanced sampling, no MoA read), then
  `cellmorph embed`: one model embeds the screen.
- LOCO: `cellmorph train` (MoA labels, leave-one-compound-out), then `cellmorph embed`: each
  compound embedded by the fold model that never saw it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from cellmorph import api
from cellmorph.atomic import write_parquet
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.log import set_progress
from cellmorph.profiling.screen import ProfileResult
from cellmorph.runtime import cpu_has_native_bf16
from cellmorph.synth.bbbc021_synthetic import synthesize_bbbc021

MODEL = "tf_efficientnet_lite0"
PREPROCESS = {"illumination": True, "rescale": "plate", "grid": [2, 2], "tile_size": 128}
TRAINING = {"model": MODEL, "preset": "fast", "freeze_stages": 4, "cached_trunk": True,
            "precision": "fp32", "preprocess": PREPROCESS}


def synth_screen(work: Path, size: tuple[int, int], **design) -> Path:
    """A SYNTHETIC BBBC021 screen with all 12 MoAs under ``work/img`` and its MoA-subset
    index (``design``: sites, concentrations, controls, as ``synthesize_bbbc021`` takes)."""
    synthesize_bbbc021(work / "img", moas="all", size=size, progress=False, **design)
    return write_parquet(index_bbbc021(work / "img", moa_subset=True,
                                       image_csv=work / "img" / "BBBC021_v1_image.csv"),
                         work / "index.parquet")


def scores(profiles: ProfileResult) -> dict[str, float]:
    """NSC and NSCB (cosine 1-NN) and the MoA-consistency mAP of a profile run's wells."""
    result = api.evaluate(profiles, conformal=False, novelty=False)
    consistency = result.metrics()["map_moa_consistency"]
    return {"nsc": result.nn_result("nsc", "cosine").accuracy,
            "nscb": result.nn_result("nscb", "cosine").accuracy,
            "map": consistency["mean_map"]}


def timed(call, *args, **kwargs):
    start = time.perf_counter()
    return call(*args, **kwargs), time.perf_counter() - start


def frozen(work: Path, index: Path) -> list[dict]:
    profiles, seconds = timed(api.profile, index=index, output=work / "frozen", model=MODEL,
                              cache_dir=work / "cache", preprocess=PREPROCESS,
                              precision="fp32", progress=False)
    return [{"method": "frozen ImageNet (greyscale per stain)", "seed": None,
             **scores(profiles), "seconds": seconds}]


def trained(work: Path, index: Path, name: str, seeds: list[int], epochs: int,
            **settings) -> list[dict]:
    """Train once over the seeds, then embed and score each seed's models."""
    run = work / name
    _, train_seconds = timed(api.train, index=index, output=run, cache_dir=work / "cache",
                             seeds=seeds, epochs=epochs, keep_models="all", progress=False,
                             **TRAINING, **settings)
    rows = []
    for seed in seeds:
        profiles, seconds = timed(api.embed, run, output=work / f"{name}-embed{seed}",
                                  seed=seed, progress=False)
        rows.append({"method": name, "seed": seed, **scores(profiles),
                     "seconds": seconds + train_seconds / len(seeds)})
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Mean and range over seeds, per method."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        row = {"method": method, "seeds": len(mine)}
        for key in ("nsc", "nscb", "map", "seconds"):
            values = [r[key] for r in mine]
            row[key] = statistics.fmean(values)
            row[f"{key}_range"] = [min(values), max(values)]
        out.append(row)
    return out


def bbbc021_sized(args: argparse.Namespace) -> None:
    """Time one weakly supervised run on a screen of BBBC021's design: every field of the MoA
    benchmark (2,384 fields, 4 sites, every concentration and DMSO well, 49 plates), at a
    small field size so that it fits a laptop's disk."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        index = synth_screen(work, tuple(args.size), sites=4, max_concentrations=None,
                             controls_per_plate=None)
        settings = {**TRAINING, "preprocess": {**PREPROCESS, "tile_size": args.tile}}
        result, seconds = timed(api.train, index=index, output=work / "weak", label="compound",
                                epochs=args.epochs, seeds=[0], progress=False, **settings)
        timings = {"fields": 2384, "size": list(args.size), "tile": args.tile,
                   "epochs": args.epochs, "crops": result.crops, "plates": result.plates,
                   "classes": len(result.classes), "seconds": seconds,
                   "crop_epochs_per_second": result.crops * args.epochs / seconds,
                   "native_bf16_cpu": cpu_has_native_bf16(), "date": time.strftime("%Y-%m-%d")}
    print(timings)
    args.out.with_name("weak_bbbc021_sized.json").write_text(json.dumps(timings, indent=2)
                                                             + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--size", type=int, nargs=2, default=(256, 320))
    p.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    p.add_argument("--bbbc021-sized", action="store_true", help="only time one weakly "
                   "supervised run on a screen of BBBC021's design (use with --size 128 160)")
    p.add_argument("--tile", type=int, default=64, help="tile size of --bbbc021-sized")
    args = p.parse_args()
    set_progress(False)
    if args.bbbc021_sized:
        return bbbc021_sized(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        index = synth_screen(work, tuple(args.size))
        rows = frozen(work, index)
        print(rows[-1], flush=True)
        for name, settings in (("weak (compound labels)", {"label": "compound"}),
                               ("LOCO fold models (MoA labels)", {})):
            rows += trained(work, index, name, args.seeds, args.epochs, **settings)
            print(rows[-len(args.seeds):], flush=True)
    table = summary(rows)
    print(f"{'method':<40}{'NSC':>22}{'NSCB':>22}{'mAP':>22}{'seconds':>10}")
    for row in table:
        cells = [f"{row[k]:.3f} ({row[k + '_range'][0]:.3f}-{row[k + '_range'][1]:.3f})"
                 for k in ("nsc", "nscb", "map")]
        print(f"{row['method']:<40}" + "".join(f"{c:>22}" for c in cells)
              + f"{row['seconds']:>10.0f}")
    report = {"data": "SYNTHETIC BBBC021, 12 MoAs", "size": list(args.size),
              "model": f"{MODEL} (ImageNet), fp32", "preprocess": PREPROCESS,
              "training": {**TRAINING, "epochs": args.epochs, "seeds": args.seeds},
              "native_bf16_cpu": cpu_has_native_bf16(), "date": time.strftime("%Y-%m-%d"),
              "rows": rows, "summary": table}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
