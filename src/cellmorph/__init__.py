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
                               or weak labels (label="compound")  -> WeakTrainingResult
    embed(run)                 profiles from a trained network    -> ProfileResult
    compare_init(config)       ImageNet vs Xavier initialisation  -> {init: CVResult}
    translocation(index)       nuclear/cytoplasmic ratio readout  -> TranslocationResult
    explain(run)               activation maximisation, Grad-CAM  -> ExplainResult
    report(run_or_table)       one self-contained HTML page       -> ReportPage
    describe(result)           a result in words, as the terminal prints it
    figures(result)            its figures, as matplotlib figures
    export(profiles, path)     a profile table as AnnData (.h5ad) for scverse
    write_h5ad(table, path)    the same for a table in memory
    download_bbbc021(root)     the public images (resumable, verified)
    download_bbbc014(root)
    run_demo(output)           the whole pipeline on a SYNTHETIC set
    config_reference()         every config key, as Markdown

Files are written only where an entry point is given an output (``output=``, or the run
folder of a ``profile``/``train`` config). Log lines go to the ``cellmorph`` logger: in a
notebook, ``logging.basicConfig(level=logging.INFO)`` shows them.

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
from importlib import metadata
from typing import Any

from cellmorph.errors import CellmorphError

__version__ = metadata.version("cellmorph")  # one place: pyproject.toml

_API = ("index_bbbc021", "index_bbbc014", "index_platemap", "index_loaddata", "read_index",
        "read_profiles", "synthesize_bbbc021", "synthesize_bbbc014", "profile", "evaluate",
        "train", "embed", "compare_init", "translocation", "explain", "report", "describe", "figures",
        "export",
        "write_h5ad", "download_bbbc021", "download_bbbc014", "config_reference")
_DEMO = ("run_demo",)  # above the API (it calls it), so it has a module of its own
__all__ = ["CellmorphError", "__version__", *_API, *_DEMO]


def __getattr__(name: str) -> Any:
    # The entry points load torch and friends: import them on first use, not at import time.
    if name in _API:
        return getattr(importlib.import_module("cellmorph.api"), name)
    if name in _DEMO:
        return importlib.import_module("cellmorph.demo").run_demo
    raise AttributeError(f"module 'cellmorph' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
