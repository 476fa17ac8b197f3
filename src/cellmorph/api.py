"""The Python API: the same entry points as the command line, for notebooks and scripts.

Each function runs one stage, writes its outputs in the run folder's layout (unless told not
to) and returns the typed result, so nothing has to be read back from disk::

    import cellmorph
    index = cellmorph.index_bbbc021("data/bbbc021", moa_subset=True)
    profiles = cellmorph.profile(index=index, output="runs/profile")
    result = cellmorph.evaluate(profiles.wells, output="runs/profile/evaluation")
    result.metrics()["nn"][0]["accuracy"]

Settings are given as a config file, a config object, a dict, or keyword arguments on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from pydantic import BaseModel

from cellmorph.atomic import ensure_writable_dir, write_parquet
from cellmorph.config import (
    EvaluateConfig,
    ProfileConfig,
    TrainConfig,
    build_config,
    load_config,
)
from cellmorph.datasets.bbbc014 import index_bbbc014
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.datasets.index import read_index
from cellmorph.datasets.platemap import index_platemap
from cellmorph.evaluation.cv import CVResult, summarise_cv
from cellmorph.evaluation.pipeline import EvaluationResult, evaluate_profiles
from cellmorph.profiling.cellprofiler import read_profiles
from cellmorph.profiling.pipeline import ProfileResult, profile_screen
from cellmorph.report.writers import write_comparison, write_cv, write_evaluation, write_profiles
from cellmorph.synth.bbbc014 import synthesize_bbbc014
from cellmorph.synth.bbbc021 import synthesize_bbbc021
from cellmorph.training.cv import run_folds

__all__ = ["compare_init", "evaluate", "index_bbbc014", "index_bbbc021", "index_platemap",
           "profile", "read_index", "read_profiles", "synthesize_bbbc014", "synthesize_bbbc021",
           "train"]

M = TypeVar("M", bound=BaseModel)


def make_config(kind: type[M], config: str | Path | dict | M | None = None, /,
                **settings: Any) -> M:
    """A validated config from a file, a dict or a config, with ``settings`` on top.

    Settings that are None are ignored, so that unset command-line options change nothing.
    """
    if config is None:
        base: dict = {}
    elif isinstance(config, BaseModel):
        base = config.model_dump()
    elif isinstance(config, dict):
        base = dict(config)
    else:
        base = load_config(config, kind).model_dump()
    base.update({k: v for k, v in settings.items() if v is not None})
    return build_config(kind, base, source=str(config) if isinstance(config, str | Path)
                        else "settings")


def _index_setting(index: str | Path | pd.DataFrame | None,
                   output: str | Path | None) -> str | Path | None:
    """A DataFrame index is saved in the run folder, so the run's config can name it."""
    if not isinstance(index, pd.DataFrame):
        return index
    if output is None:
        raise ValueError("give output= with an index DataFrame (it is saved in the run folder)")
    read_index(index)
    return write_parquet(index, ensure_writable_dir(Path(output)) / "index.parquet")


def profile(config: str | Path | dict | ProfileConfig | None = None, *,
            index: str | Path | pd.DataFrame | None = None, output: str | Path | None = None,
            write: bool = True, progress: bool = True, **settings: Any) -> ProfileResult:
    """Deep-feature profiles of a screen with a frozen network (Pawlowski et al. 2016).

    Parameters
    ----------
    config
        A YAML file, dict or :class:`~cellmorph.config.ProfileConfig`; keyword settings
        (``model=``, ``weights=``, ``preprocess=``, ...) go on top.
    index
        The field-of-view index: a Parquet file from ``cellmorph index`` or a DataFrame.
    output
        The run folder (config, tile cache, per-plate results, profile tables).
    write
        Also write ``profiles_image/well/treatment.parquet`` and ``timings.json``.

    Returns
    -------
    ProfileResult
        ``.images``, ``.wells``, ``.treatments`` (pycytominer-style tables).

    Examples
    --------
    >>> result = profile(index=index, output=tmp / "profile", preprocess={"grid": [1, 1]},
    ...                  progress=False)
    >>> len(result.wells) == index[["Metadata_Plate", "Metadata_Well"]].drop_duplicates().shape[0]
    True
    """
    cfg = make_config(ProfileConfig, config, index=_index_setting(index, output),
                      output=output, **settings)
    result = profile_screen(cfg, progress_bars=progress)
    if write:
        write_profiles(result, cfg.output)
    return result


def evaluate(profiles: str | Path | pd.DataFrame | ProfileResult,
             config: str | Path | dict | EvaluateConfig | None = None, *,
             output: str | Path | None = None, index: str | Path | pd.DataFrame | None = None,
             **settings: Any) -> EvaluationResult:
    """NSC/NSCB 1-nearest-neighbour MoA accuracy and mAP (copairs) of well profiles.

    Parameters
    ----------
    profiles
        Well-level profiles: a table, a ``cellmorph profile`` result or folder, a Parquet or
        CSV file, or ``"ljosa2013"`` for the bundled CellProfiler profiles of BBBC021.
    config
        A YAML file, dict or :class:`~cellmorph.config.EvaluateConfig`; keyword settings
        (``normalize=``, ``sphering=``, ``map=``, ...) go on top.
    output
        Where to write metrics, tables and plots (nothing is written without it).
    index
        An index to annotate profiles that lack ``Metadata_`` treatment columns.

    Examples
    --------
    >>> result = evaluate("ljosa2013", map=False)
    >>> result.nn_result("nsc", "cosine").n_treatments
    103
    """
    cfg = make_config(EvaluateConfig, config, **settings)
    if isinstance(profiles, ProfileResult):
        wells = profiles.wells
    elif isinstance(profiles, pd.DataFrame):
        wells = profiles
    else:
        wells = read_profiles(profiles, annotate_with=None if index is None else read_index(index))
    result = evaluate_profiles(wells, cfg)
    if output is not None:
        write_evaluation(result, output)
    return result


def train(config: str | Path | dict | TrainConfig | None = None, *,
          index: str | Path | pd.DataFrame | None = None, output: str | Path | None = None,
          write: bool = True, progress: bool = True, **settings: Any) -> CVResult:
    """Fine-tune with cross-validation (leave-one-compound-out by default; Kensert et al. 2019).

    Parameters
    ----------
    config
        A YAML file, dict or :class:`~cellmorph.config.TrainConfig`; keyword settings
        (``model=``, ``epochs=``, ``seeds=``, ``folds=``, ...) go on top.
    index, output
        The field-of-view index (file or DataFrame) and the run folder.
    write
        Also write the per-level predictions, metrics and plots.

    Returns
    -------
    CVResult
        Per seed: the predictions at each level and the metrics; ``.summary``: mean +- SEM.

    Examples
    --------
    >>> result = train(index=index, output=tmp / "loco", model="tf_efficientnet_lite0",
    ...                preset="fast", epochs=1, folds=["emetine", "cytochalasin B"],
    ...                preprocess={"grid": [1, 1], "tile_size": 32, "illumination": False},
    ...                progress=False)
    >>> result.seeds[0].folds
    ['cytochalasin B', 'emetine']
    """
    cfg = make_config(TrainConfig, config, index=_index_setting(index, output), output=output,
                      **settings)
    result = summarise_cv(run_folds(cfg, progress_bars=progress))
    if write:
        write_cv(result, cfg.output)
    return result


def compare_init(config: str | Path | dict | TrainConfig, *, output: str | Path | None = None,
                 inits: tuple[str, ...] = ("imagenet", "xavier"), progress: bool = True,
                 **settings: Any) -> dict[str, CVResult]:
    """Pretrained vs Xavier-initialised fine-tuning over the same folds, seeds and budget
    (Kensert et al. 2019, Fig. 4); each run goes to ``OUTPUT/<init>``."""
    cfg = make_config(TrainConfig, config, **settings)
    output = Path(output or cfg.output)
    shared_cache = cfg.cache_dir or output / "cache"
    results = {}
    for init in inits:
        run_cfg = cfg.model_copy(update={"weights": init, "output": output / init,
                                         "cache_dir": shared_cache})
        results[init] = train(run_cfg, progress=progress)
    write_comparison(results, output)
    return results
