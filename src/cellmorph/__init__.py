"""cellmorph: mechanism-of-action answers from high-content screens with pretrained networks.

The package follows the data flow of a screen (each folder a stage, imports pointing down):
dataset index -> preprocessing -> tile cache -> backbone -> profiles or predictions
-> evaluation -> report. Importing it does no work; every stage is a function.

Entry points (the same as the command line's)::

    index_bbbc021(root)        BBBC021 field-of-view index (official metadata bundled)
    index_bbbc014(root)        BBBC014 index (NF-kB translocation)
    index_platemap(csv)        your own screen from a plate-map CSV
    index_loaddata(csv)        a CellProfiler / JUMP LoadData CSV (+ a treatment table)
    read_index(path)           an index written by `cellmorph index`
    synthesize_bbbc021(out)    SYNTHETIC plates in the BBBC021 layout (demos, tests)
    profile(index=, output=)   frozen-network profiles           -> ProfileResult
    evaluate(profiles)         NSC/NSCB 1-NN accuracy and mAP     -> EvaluationResult
    train(index=, output=)     cross-validated fine-tuning        -> CVResult
    compare_init(config)       ImageNet vs Xavier initialisation  -> {init: CVResult}
    translocation(index)       nuclear/cytoplasmic ratio readout  -> TranslocationResult
    explain(run)               activation maximisation, Grad-CAM  -> ExplainResult
    report(run_or_table)       one self-contained HTML page       -> its path
    write_h5ad(table, path)    profiles as AnnData for scverse

Example::

    import cellmorph
    index = cellmorph.index_bbbc021("data/bbbc021", moa_subset=True)
    profiles = cellmorph.profile(index=index, output="runs/profile")
    result = cellmorph.evaluate(profiles, output="runs/profile/evaluation")
    print(result.metrics()["nn"][0]["accuracy"])

Each entry point's own help (``help(cellmorph.profile)``) lists its settings.
"""

from __future__ import annotations

import importlib
from typing import Any

from cellmorph.errors import CellmorphError

__version__ = "0.2.0"

_API = ("index_bbbc021", "index_bbbc014", "index_platemap", "index_loaddata", "read_index",
        "read_profiles", "synthesize_bbbc021", "synthesize_bbbc014", "profile", "evaluate",
        "train", "compare_init", "translocation", "explain", "report", "write_h5ad")
__all__ = ["CellmorphError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    # The entry points load torch and friends: import them on first use, not at import time.
    if name in _API:
        return getattr(importlib.import_module("cellmorph.api"), name)
    raise AttributeError(f"module 'cellmorph' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
