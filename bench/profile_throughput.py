"""Throughput of the whole profiling pipeline against the bare model forward pass.

    python bench/profile_throughput.py [--size 1024x1280] [--model tf_efficientnet_lite0]

Synthesises one SYNTHETIC plate, then times ``profile_screen`` end to end (read TIFFs,
illumination correction, tiling, cache, inference, aggregation, Parquet) and the bare
``model(x)`` on the very same prepared tensors. Prints tiles/s for both and their ratio
(1.0 = the pipeline costs nothing beyond the network), then the cost per image as the
number of tiles and stains grows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cellmorph import schema as sc
from cellmorph.api import profile as profile_screen
from cellmorph.atomic import write_parquet
from cellmorph.cache import KEEP
from cellmorph.config import PreprocessConfig, ProfileConfig
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.datasets.index import read_index
from cellmorph.profiling.pipeline import make_embedder
from cellmorph.synth.bbbc021 import MOA_PHENOTYPES, synthesize_bbbc021


def bare_forward_seconds(cfg: ProfileConfig, tiles: np.ndarray, channels: list[str]) -> float:
    """Seconds of the model alone on already-prepared input batches (after a warm-up)."""
    emb = make_embedder(cfg, channels)
    per = cfg.batch_size // (len(channels) if cfg.channel_mode == "greyscale" else 1)
    batches = [emb.to_model_input(torch.from_numpy(np.ascontiguousarray(tiles[i : i + per])))
               for i in range(0, len(tiles), per)]
    emb.forward_input(batches[0])
    t = time.perf_counter()
    for x in batches:
        emb.forward_input(x)
    return time.perf_counter() - t


def run(index_path: Path, work: Path, grid: tuple[int, int], model: str, mode: str,
        batch: int, repeats: int) -> dict:
    """Best of ``repeats`` cold pipeline runs and bare passes, alternated (the machine is noisy)."""
    cfg = None
    walls, bares, stages = [], [], None
    for _ in range(repeats):
        shutil.rmtree(work, ignore_errors=True)
        cfg = ProfileConfig(index=index_path, output=work, model=model, channel_mode=mode,
                            batch_size=batch, preprocess=PreprocessConfig(grid=grid))
        t = time.perf_counter()
        profile_screen(cfg, progress=False)
        walls.append(time.perf_counter() - t)
        timings = json.loads((work / "timings.json").read_text())
        if stages is None or walls[-1] == min(walls):
            stages = timings
        cache_dir = next((work / "cache").iterdir())
        tables = pd.concat([pd.read_parquet(f) for f in sorted(cache_dir.glob("*.parquet"))])
        tiles = np.concatenate([np.load(f) for f in sorted(cache_dir.glob("*.npy"))
                                if not f.name.endswith(".illum.npy")])[tables[KEEP].to_numpy()]
        bares.append(bare_forward_seconds(cfg, tiles, sc.channels_of(read_index(index_path))))
    n = len(tiles)
    return {"tiles": n, "images": len(read_index(index_path)), "pipeline": n / min(walls),
            "bare": n / min(bares), "wall": min(walls), "stages": stages}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", default="512x640", help="field size HxW (real: 1024x1280)")
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--mode", default="greyscale", choices=["greyscale", "rgb"])
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--plate", default="Week1_22123")
    p.add_argument("--sites", type=int, default=4, help="fields per well (1-4)")
    p.add_argument("--repeats", type=int, default=2, help="best of N (timings here are noisy)")
    p.add_argument("--scaling", action="store_true", help="also cost per image vs tiles/stains")
    args = p.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        synthesize_bbbc021(root, moas=sorted(MOA_PHENOTYPES), plates=[args.plate], size=(h, w),
                           max_concentrations=None, controls_per_plate=2, progress=False,
                           sites=args.sites)
        index = index_bbbc021(root, image_csv=root / "BBBC021_v1_image.csv", moa_subset=True)
        index_path = write_parquet(index, Path(tmp) / "index.parquet")
        print(f"SYNTHETIC plate {args.plate}: {len(index)} fields of {h}x{w}, 3 stains; "
              f"{args.model}, {args.mode}, {torch.get_num_threads()} threads")
        r = run(index_path, Path(tmp) / "run", (2, 2), args.model, args.mode, args.batch,
                args.repeats)
        print(f"pipeline (read, preprocess, cache, infer, write): {r['pipeline']:.1f} tiles/s "
              f"({r['wall']:.1f} s for {r['tiles']} tiles)")
        print(f"bare model forward on the same tensors:           {r['bare']:.1f} tiles/s")
        print("stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items()
                                         if k != "tiles_embedded"))
        print(f"ratio pipeline / bare forward: {r['pipeline'] / r['bare']:.2f}")
        if args.scaling:
            print("\ncost per image (s) as tiles and stains grow:")
            print(f"{'grid':>6}{'stains':>8}{'s/image':>10}{'ratio':>8}")
            for grid in ((1, 1), (2, 2), (3, 3)):
                for n_stains in (1, 2, 3):
                    keep = sc.channels_of(index)[:n_stains]
                    sub = index.drop(columns=[sc.path_column(c) for c in sc.channels_of(index)
                                              if c not in keep])
                    sub_path = write_parquet(sub, Path(tmp) / f"idx{n_stains}.parquet")
                    r = run(sub_path, Path(tmp) / "run", grid, args.model, args.mode, args.batch,
                            1)
                    print(f"{grid[0]}x{grid[1]:<4}{n_stains:>8}{r['wall'] / r['images']:>10.3f}"
                          f"{r['pipeline'] / r['bare']:>8.2f}")


if __name__ == "__main__":
    main()
