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

from cellmorph import schema as sc
from cellmorph.config import (
    EvaluateConfig,
    ProfileConfig,
    TrainConfig,
    build_config,
    load_config,
)
from cellmorph.datasets.bbbc014 import POSITIVE, index_bbbc014
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.datasets.index import read_index
from cellmorph.datasets.loaddata import index_loaddata
from cellmorph.datasets.platemap import index_platemap
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.cv import CVResult, summarise_cv
from cellmorph.evaluation.pipeline import EvaluationResult, evaluate_profiles
from cellmorph.evaluation.translocation import TranslocationResult, score_readout
from cellmorph.interpret.run import ExplainResult, explain_run
from cellmorph.profiling.cellprofiler import read_profiles
from cellmorph.profiling.pipeline import ProfileResult, profile_screen
from cellmorph.profiling.translocation import (
    TranslocationSettings,
    aggregate_fields,
    translocation_fields,
)
from cellmorph.reporting.anndata import write_h5ad
from cellmorph.reporting.html import write_report
from cellmorph.reporting.writers import (
    write_comparison,
    write_cv,
    write_evaluation,
    write_explain,
    write_h5ad_profiles,
    write_profiles,
    write_translocation,
)
from cellmorph.synth.bbbc014 import synthesize_bbbc014
from cellmorph.synth.bbbc021 import synthesize_bbbc021
from cellmorph.training.cv import TrainingRun, run_folds

__all__ = ["compare_init", "evaluate", "explain", "index_bbbc014", "index_bbbc021",
           "index_loaddata", "index_platemap", "profile", "read_index", "read_profiles",
           "report", "synthesize_bbbc014", "synthesize_bbbc021", "train", "translocation",
           "write_h5ad"]

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


def _run_config(kind: type[M], config: Any, index: str | Path | pd.DataFrame | None,
                output: str | Path | None, settings: dict) -> tuple[M, pd.DataFrame | None]:
    """A run's config, and the index when it is given as a table: the run saves it in its
    folder as ``index.parquet`` (once the folder is taken), so the run's config can name it."""
    table = index if isinstance(index, pd.DataFrame) else None
    if table is not None:
        if output is None:
            raise CellmorphError("give output= with an index DataFrame (it is saved in the run "
                                 "folder)")
        index = Path(output) / "index.parquet"
    return make_config(kind, config, index=index, output=output, **settings), table


def profile(config: str | Path | dict | ProfileConfig | None = None, *,
            index: str | Path | pd.DataFrame | None = None, output: str | Path | None = None,
            write: bool = True, h5ad: bool = False, overwrite: bool = False,
            progress: bool = True, **settings: Any) -> ProfileResult:
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
    h5ad
        Also write the profiles as AnnData files (``profiles_<level>.h5ad``).
    overwrite
        Start afresh in a run folder made with another configuration (deletes its results);
        without it such a folder is refused, and a folder of the same configuration resumes.

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
    cfg, table = _run_config(ProfileConfig, config, index, output, settings)

    def finish(result: ProfileResult) -> None:  # while the run still holds its folder
        if write:
            write_profiles(result, cfg.output)
        if h5ad:
            write_h5ad_profiles(result, cfg.output)

    return profile_screen(cfg, progress_bars=progress, overwrite=overwrite, index_table=table,
                          finish=finish)


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
          write: bool = True, overwrite: bool = False, progress: bool = True,
          **settings: Any) -> CVResult:
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
    overwrite
        Start afresh in a run folder made with another configuration (deletes its results);
        without it such a folder is refused, and a folder of the same configuration resumes
        (more folds or seeds may be added to it).

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
    cfg, table = _run_config(TrainConfig, config, index, output, settings)
    results: list[CVResult] = []

    def finish(run: TrainingRun) -> None:  # while the run still holds its folder
        results.append(summarise_cv(run))
        if write:
            write_cv(results[0], cfg.output)

    run_folds(cfg, progress_bars=progress, overwrite=overwrite, index_table=table, finish=finish)
    return results[0]


def compare_init(config: str | Path | dict | TrainConfig, *, output: str | Path | None = None,
                 inits: tuple[str, ...] = ("imagenet", "xavier"), whole_network: bool = True,
                 overwrite: bool = False, progress: bool = True,
                 **settings: Any) -> dict[str, CVResult]:
    """Pretrained vs Xavier-initialised fine-tuning over the same folds, seeds and budget
    (Kensert et al. 2019, Fig. 4); each run goes to ``OUTPUT/<init>``.

    As in the paper, both arms fine-tune the whole network (``whole_network``): a frozen or
    cached trunk in the config is switched off, since a frozen random trunk would compare a
    head on random features with a fine-tuned network. Each result says what it trained.
    """
    cfg = make_config(TrainConfig, config, **settings)
    if whole_network:
        cfg = cfg.model_copy(update={"freeze_stages": 0, "cached_trunk": False})
    output = Path(output or cfg.output)
    shared_cache = cfg.cache_dir or output / "cache"
    results = {}
    for init in inits:
        run_cfg = cfg.model_copy(update={"weights": init, "output": output / init,
                                         "cache_dir": shared_cache})
        results[init] = train(run_cfg, progress=progress, overwrite=overwrite)
    write_comparison(results, output)
    return results


def translocation(index: str | Path | pd.DataFrame, *, output: str | Path | None = None,
                  nuclei: str = "DAPI", reporter: str = "FITC", ring: int = 6,
                  positive: str | None = None, progress: bool = True) -> TranslocationResult:
    """The nuclear/cytoplasmic reporter ratio of every field and well: the classic
    translocation readout, no learning (a baseline next to the deep models on BBBC014).

    Nuclei come from an Otsu threshold on ``nuclei``, each cytoplasm is a ring of ``ring``
    pixels around its nucleus (scikit-image), and each cell's ratio is its mean ``reporter``
    intensity inside over the ring. Labelled wells are scored (AUC, Z', hold-out threshold
    accuracy across cell lines) with ``positive`` as the translocated class (default: BBBC014's
    ``translocation``).

    Examples
    --------
    >>> result = translocation(index_bbbc014("tests/data/bbbc014"), progress=False)
    ... # doctest: +SKIP
    >>> result.wells[["Metadata_Well", "Feature_NucCytoRatio"]]  # doctest: +SKIP
    """
    settings = TranslocationSettings(nuclei=nuclei, reporter=reporter, ring=ring)
    fields = translocation_fields(read_index(index), settings, progress_bar=progress)
    wells = aggregate_fields(fields, "well")
    labels = set(sc.treatments(wells)[sc.MOA].dropna())
    scores = {}
    if labels:
        positive = positive or (POSITIVE if POSITIVE in labels else None)
        if positive is None:
            raise CellmorphError(f"translocation: which label is the translocated one? give "
                                 f"positive= (labels: {sorted(labels)})")
        scores = score_readout(wells, positive)
    result = TranslocationResult(settings, fields, wells, scores)
    if output is not None:
        write_translocation(result, output)
    return result


def explain(run: str | Path, *, output: str | Path | None = None,
            layers: list[str] | None = None, filters: int = 2, size: int = 128,
            steps: int = 128, crops_per_moa: int = 2, seed: int = 0, device: str = "auto",
            progress: bool = True) -> ExplainResult:
    """What the network of a run sees: activation maximisation of chosen filters (pretrained
    beside fine-tuned) and Grad-CAM over example crops of each MoA; written to
    ``RUN/explain`` (or ``output``).

    Examples
    --------
    >>> result = explain("runs/bbbc021-loco", steps=64)  # doctest: +SKIP
    """
    result = explain_run(run, layers=layers, filters=filters, size=size, steps=steps,
                         crops_per_moa=crops_per_moa, seed=seed, device=device,
                         progress_bar=progress)
    write_explain(result, Path(output) if output is not None else Path(run) / "explain")
    return result


def report(source: str | Path, *, output: str | Path | None = None) -> Path:
    """One self-contained HTML page for a run folder (profiling, fine-tuning, both, a
    compare-init folder) or a bare ``predictions_treatment.csv``; returns its path.

    Examples
    --------
    >>> report("demo-output")  # doctest: +SKIP
    PosixPath('demo-output/report.html')
    """
    return write_report(source, output)
