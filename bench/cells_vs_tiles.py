"""Tiles or single cells, on the same SYNTHETIC BBBC021 screen: NSC and NSCB of frozen
EfficientNet-Lite0 profiles (ImageNet weights, offline) with 2x2 tiles and with one crop per
nucleus, the same evaluation for both. About 10 minutes on 2 CPU cores.

    .venv/bin/python bench/cells_vs_tiles.py [--size 256 320] [--out bench/cells_vs_tiles.json]

The synthetic cells are drawn with a nucleus radius of 6 pixels and a cell radius of about
14 (elongated up to 18): a 40-pixel crop holds one cell and a margin, as 96 pixels do at
BBBC021's resolution. Crops go to the network at 96 pixels (upsampled; a 40-pixel input
leaves EfficientNet a 2x2 feature map).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from weak_vs_frozen import synth_screen  # bench/ is on the path when a script runs

from cellmorph import api
from cellmorph.log import set_progress
from cellmorph.runtime import cpu_has_native_bf16

MODES = {
    "tiles (2x2 grid, 224 px)": {"tiles": "grid", "grid": [2, 2]},
    "cells (40 px crops at 96 px, up to 50 a field)": {
        "tiles": "cells", "cells": {"size": 40}, "tile_size": 96},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, nargs=2, default=(256, 320))
    p.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = p.parse_args()
    set_progress(False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        index = synth_screen(work, tuple(args.size))
        for name, preprocess in MODES.items():
            start = time.perf_counter()
            result = api.profile(index=index, output=work / name.split()[0], progress=False,
                                 precision="fp32", preprocess=preprocess)
            seconds = time.perf_counter() - start
            scored = api.evaluate(result, map=False, conformal=False, novelty=False)
            accuracy = {f"{r.holdout}_{r.metric}": r.accuracy for r in scored.nn}
            crops = result.timings["tiles_embedded"]
            rows.append({"mode": name, **accuracy, "crops_per_field": crops / len(result.images),
                         "seconds": seconds, "treatments": len(scored.treatments)})
            print(rows[-1], flush=True)
    report = {"data": "SYNTHETIC BBBC021, 12 MoAs", "size": list(args.size),
              "model": "tf_efficientnet_lite0 (ImageNet), greyscale, fp32",
              "native_bf16_cpu": cpu_has_native_bf16(), "date": time.strftime("%Y-%m-%d"),
              "rows": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
