"""Speed against accuracy of the cached trunk, per freeze depth, on a SYNTHETIC LOCO run.

    python bench/cached_trunk.py [--moas all] [--tile 64] [--epochs 3] [--depths 0,4,5,6,all]

Synthesises a BBBC021-shaped SYNTHETIC set (all 12 MoAs, two concentrations a compound: 38
compounds, 69 treatments, the real LOCO structure), then runs the whole leave-one-compound-out
protocol once per freeze depth: 0 is full fine-tuning, N freezes the stem and N stages and
caches them, ``all`` trains the classifier alone on cached pooled features. Prints the wall
time and treatment accuracy of each, their ratio to full fine-tuning, and writes
``bench/cached_trunk.json`` and the plot ``bench/cached_trunk.png``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cellmorph import api
from cellmorph.atomic import write_parquet
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.log import set_progress
from cellmorph.reporting.plots import Figure, save
from cellmorph.synth.bbbc021_synthetic import MOA_PHENOTYPES, synthesize_bbbc021

HERE = Path(__file__).parent


def run_depth(index: Path, work: Path, depth: str, tile: int, epochs: int, seed: int,
              model: str) -> dict:
    """One full LOCO run at one freeze depth; its wall time and accuracies."""
    frozen = depth != "0"
    settings = dict(model=model, preset="fast", epochs=epochs, seeds=[seed],
                    freeze_stages=depth if depth == "all" else int(depth),
                    cached_trunk=frozen, progress=False, cache_dir=work / "cache",
                    preprocess={"illumination": False, "anscombe": True,
                                "control_normalise": True, "rescale": "image", "grid": [2, 2],
                                "tile_size": tile})
    start = time.perf_counter()
    result = api.train(index=index, output=work / f"depth-{depth}-seed{seed}", **settings)
    wall = time.perf_counter() - start
    return {"depth": depth, "seed": seed, "wall_s": wall,
            "treatment_accuracy": result.summary.treatment_accuracy.mean,
            "crop_accuracy": result.summary.crop_accuracy.mean,
            "trained": result.summary.trained}


def plot(rows: list[dict], path: Path) -> Path:
    """Treatment accuracy against wall time, one point per depth and seed."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for row in rows:
        ax.scatter(row["wall_s"], row["treatment_accuracy"], s=30, color="#4c72b0")
        ax.annotate(f"freeze {row['depth']}", (row["wall_s"], row["treatment_accuracy"]),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("wall time of the whole LOCO run (s, log scale)")
    ax.set_ylabel("treatment accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("cached trunk: speed against accuracy (SYNTHETIC, 38 folds)", fontsize=9)
    return save(fig, path, synthetic=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--moas", default="all", help="'all' (12) or a number of MoAs")
    p.add_argument("--tile", type=int, default=64, help="crop size fed to the model")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--depths", default="0,4,5,6,all")
    p.add_argument("--seeds", default="0")
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--out", default=str(HERE / "cached_trunk.json"))
    args = p.parse_args()
    set_progress(False)
    moas = sorted(MOA_PHENOTYPES)
    if args.moas != "all":
        moas = moas[: int(args.moas)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synthesize_bbbc021(work / "images", moas=moas, size=(2 * args.tile, int(2.5 * args.tile)),
                           max_concentrations=2, controls_per_plate=2, progress=False)
        index = write_parquet(index_bbbc021(work / "images", moa_subset=True),
                              work / "index.parquet")
        for seed in map(int, args.seeds.split(",")):
            for depth in args.depths.split(","):
                row = run_depth(index, work, depth, args.tile, args.epochs, seed, args.model)
                rows.append(row)
                print(f"freeze {depth:>3}  seed {seed}  {row['wall_s']:7.1f} s  treatment "
                      f"{row['treatment_accuracy']:.1%}  crop {row['crop_accuracy']:.1%}  "
                      f"({row['trained']})", flush=True)
    full = {r["seed"]: r for r in rows if r["depth"] == "0"}
    print(f"\n{'depth':>6}{'speed-up':>10}{'accuracy cost (points)':>26}")
    for row in rows:
        if row["seed"] in full and row["depth"] != "0":
            base = full[row["seed"]]
            row["speedup"] = base["wall_s"] / row["wall_s"]
            row["accuracy_cost_points"] = 100 * (base["treatment_accuracy"]
                                                 - row["treatment_accuracy"])
            print(f"{row['depth']:>6}{row['speedup']:>10.1f}{row['accuracy_cost_points']:>26.1f}")
    Path(args.out).write_text(json.dumps({"settings": vars(args), "runs": rows}, indent=2))
    print(f"plot: {plot(rows, Path(args.out).with_suffix('.png'))}")


if __name__ == "__main__":
    main()
