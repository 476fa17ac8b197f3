"""Start-up of the commands that run no network: wall time of a fresh `cellmorph` process,
three runs each (the median and the range), and the heavy libraries each one loaded.

    python bench/startup.py            # about half a minute; writes bench/startup.json

A command's time here is almost all imports: torch, timm and torchvision alone take seconds,
so a command that runs no network must not load them (tests/test_cli.py checks which ones
are loaded; this measures what that is worth).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

HERE = Path(__file__).parent
RUNS = 3
PROBE = ("import sys, runpy; sys.argv = ['cellmorph', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('cellmorph.cli', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "heavy = [m for m in ('torch', 'timm', 'torchvision', 'ray') if m in sys.modules]\n"
         "print('HEAVY', ','.join(heavy), file=sys.stderr)\n")


def plate_map(folder: Path, rows: int = 100) -> Path:
    """A plate map of ``rows`` fields (two stains), with its images."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(rows):
        paths = {}
        for stain in ("dapi", "actin"):
            name = f"img/f{i}_{stain}.tif"
            tifffile.imwrite(folder / name, np.zeros((8, 8), np.uint16))
            paths[f"path_{stain}"] = name
        records.append({"plate": "P1", "well": f"{'ABCDEFGH'[i // 12 % 8]}{i % 12 + 1:02d}",
                        "site": i // 96 + 1, "compound": "DMSO" if i % 12 == 0 else f"c{i % 7}",
                        "concentration": 0 if i % 12 == 0 else 1 + i % 3, **paths})
    path = folder / "plate_map.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def timed(args: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    heavy = next((line.split(" ", 1)[1] if " " in line else "" for line in
                  done.stderr.splitlines() if line.startswith("HEAVY")), "?")
    return seconds, heavy


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        commands = {
            "cellmorph --help": ["--help"],
            "cellmorph index platemap MISSING.csv": ["index", "platemap", str(folder / "no.csv")],
            "cellmorph config-reference": ["config-reference"],
            "cellmorph index platemap (100 rows)": ["index", "platemap",
                                                     str(plate_map(folder / "pm")),
                                                     "-o", str(folder / "index.parquet")],
        }
        rows = []
        for name, args in commands.items():
            times, heavy = [], ""
            for _ in range(RUNS):
                (folder / "index.parquet").unlink(missing_ok=True)
                seconds, heavy = timed(args)
                times.append(seconds)
            rows.append({"command": name, "median_s": statistics.median(times),
                         "min_s": min(times), "max_s": max(times), "heavy_loaded": heavy})
            print(f"| {name} | {statistics.median(times):.2f} s ({min(times):.2f}-"
                  f"{max(times):.2f}) | {heavy or 'none'} |", flush=True)
    (HERE / "startup.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
