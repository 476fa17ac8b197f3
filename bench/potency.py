"""Potency fits on simulated dose-response curves: how often the 95 % EC50 interval holds the
planted EC50 (coverage), how often a flat series is flagged, and the time a compound takes.

    .venv/bin/python bench/potency.py [--compounds 1000] [--boot 100]

The design of ``tests/test_potency.py`` (9 half-log doses over four decades, 3 wells each, a
planted EC50 inside the doses, slope 0.7-2.5, top 1-3 over 0, noise 15 % of the top), with
enough compounds that the coverage's Monte Carlo error is about 1 point (the test's 100
compounds leave 3). Writes ``potency.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from cellmorph.evaluation.potency import compound_potency, hill

DOSES = np.repeat(10.0 ** np.arange(-3, 1.01, 0.5), 3)


def _cpu() -> str:
    """The CPU's model name (the figures are this CPU's)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--compounds", type=int, default=1000)
    p.add_argument("--boot", type=int, default=100)
    p.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = p.parse_args()
    rng = np.random.default_rng(2026)
    covered, fitted, start = 0, 0, time.perf_counter()
    for i in range(args.compounds):
        log_ec50, slope, top = rng.uniform(-2.5, 0.5), rng.uniform(0.7, 2.5), rng.uniform(1, 3)
        y = hill(np.log10(DOSES), 0.0, top, log_ec50, slope)
        row = compound_potency(DOSES, y + rng.normal(0, 0.15 * top, len(DOSES)),
                               n_boot=args.boot, seed=i)
        if row["fit"] == "ok":
            fitted += 1
            covered += row["ec50_low"] <= 10 ** log_ec50 <= row["ec50_high"]
    seconds = (time.perf_counter() - start) / args.compounds
    flat = [compound_potency(DOSES, rng.normal(1.0, 0.3, len(DOSES)), n_boot=10, seed=i)["flat"]
            for i in range(args.compounds)]
    coverage = covered / max(fitted, 1)
    report = {"compounds": args.compounds, "bootstrap": args.boot, "fitted": fitted,
              "coverage_95": coverage,
              "coverage_monte_carlo_se": float(np.sqrt(coverage * (1 - coverage) / fitted)),
              "flat_flagged": float(np.mean(flat)), "seconds_per_compound": seconds,
              "cpu": _cpu(),
              "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(report, indent=1))
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
