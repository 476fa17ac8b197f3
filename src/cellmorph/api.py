"""The Python API: the same entry points as the command line, for notebooks and scripts.

Each function runs one stage and returns the typed result, so nothing has to be read back
from disk. One rule for files: an entry point writes files only where it is given an
output (``output=``, or the run folder a ``profile``/``train`` config names, which those
runs need), in the layout the command line uses::

    import cellmorph
    index = cellmorph.index_bbbc021("data/bbbc021", moa_subset=True)
    profiles = cellmorph.profile(index=index, output="runs/profile")
    result = cellmorph.evaluate(profiles.wells, output="runs/profile/evaluation")
    result.metrics()["nn"][0]["accuracy"]

Settings are given as a config file, a config object, a dict, or keyword arguments on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
from pydantic import BaseModel

from cellmorph import schema as sc
from cellmorph.atomic import check_not_input, writable_target, write_parquet, write_text
from cellmorph.config import (
    EvaluateConfig,
    ProfileConfig,
    TrainConfig,
    build_config,
    load_config,
    reference_markdown,
)
from cellmorph.datasets import bbbc014, bbbc021, loaddata, platemap
from cellmorph.datasets.bbbc014 import DEFAULT_LAYOUT, POSITIVE, BBBC014Layout
from cellmorph.datasets.index import read_index, summarize
from cellmorph.download import download_bbbc014, download_bbbc021
from cellmorph.errors import CellmorphError
from cellmorph.profiling.cellprofiler import read_profiles
from cellmorph.reporting.anndata import write_h5ad
from cellmorph.synth.bbbc014_synthetic import synthesize_bbbc014
from cellmorph.synth.bbbc021_synthetic import synthesize_bbbc021

# The entry points that run networks, score or draw import torch, timm, scikit-learn and
# matplotlib, which take seconds to load: they are imported inside the functions that use them,
# so that indexing, synthesising, downloading and the config reference start in well under a
# second (tests/test_cli.py checks which libraries a command loads).
if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cellmorph.evaluation.calls import ScreenCalls
    from cellmorph.evaluation.cv_scores import CVResult
    from cellmorph.evaluation.profiles import EvaluationResult
    from cellmorph.evaluation.readout import TranslocationResult
    from cellmorph.interpret.run import ExplainResult
    from cellmorph.profiling.screen import ProfileResult
    from cellmorph.reporting.html import ReportPage
    from cellmorph.training.weak import WeakTrainingResult

__all__ = ["compare_init", "config_reference", "describe", "download_bbbc014",
           "download_bbbc021", "embed", "evaluate", "explain", "export", "figures", "index_bbbc014",
           "index_bbbc021",
           "index_loaddata", "index_platemap", "predict", "profile", "read_index",
           "read_profiles",
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


def _write_index(build: Any, output: str | Path | None, inputs: tuple, **options: Any
                 ) -> pd.DataFrame:
    """Build an index; write it to ``output`` (Parquet) when given, checked first: never
    one of the index's own inputs, never a folder or a special file."""
    if output is not None:
        check_not_input(output, *(p for p in inputs if p is not None))
        writable_target(Path(output))
    index = build(**options)
    if output is not None:
        write_parquet(index, output)
    return index


def index_bbbc021(root: str | Path | None, *, moa_subset: bool = False,
                  plates: list[str] | None = None, image_csv: str | Path | None = None,
                  moa_csv: str | Path | None = None, check_files: bool = True,
                  output: str | Path | None = None) -> pd.DataFrame:
    """The BBBC021 field-of-view index (see :func:`cellmorph.datasets.bbbc021.index_bbbc021`
    for the options), written to ``output`` when given.

    Examples
    --------
    >>> index = index_bbbc021(None, moa_subset=True, check_files=False,
    ...                       output=tmp / "bbbc021.parquet")
    >>> len(read_index(tmp / "bbbc021.parquet")) == len(index)
    True
    """
    return _write_index(bbbc021.index_bbbc021, output, (image_csv, moa_csv), root=root,
                        moa_subset=moa_subset, plates=plates, image_csv=image_csv,
                        moa_csv=moa_csv, check_files=check_files)


def index_bbbc014(root: str | Path, layout: BBBC014Layout = DEFAULT_LAYOUT, *,
                  pattern: str | None = None, check_files: bool = True,
                  output: str | Path | None = None) -> pd.DataFrame:
    """The BBBC014 index (96 wells, DAPI + FITC), written to ``output`` when given;
    ``pattern`` is a file-name regex with groups channel, row and column, for renamed files.

    Examples
    --------
    >>> len(index_bbbc014(bbbc014_sample))
    96
    """
    if pattern is not None:
        layout = layout.model_copy(update={"pattern": pattern})
    return _write_index(bbbc014.index_bbbc014, output, (), root=root, layout=layout,
                        check_files=check_files)


def index_platemap(path: str | Path, *, root: str | Path | None = None, control: str = "DMSO",
                   check_files: bool = True, output: str | Path | None = None) -> pd.DataFrame:
    """Your own screen from a plate-map CSV (plate, well, site, ``path_<stain>``..., compound,
    concentration[, label, batch, replicate]), written to ``output`` when given.

    Examples
    --------
    >>> sorted(index_platemap(plate_map)["Metadata_Role"].unique())
    ['control', 'treatment']
    """
    return _write_index(platemap.index_platemap, output, (path,), path=path, root=root,
                        control=control, check_files=check_files)


def index_loaddata(path: str | Path, *, treatments: str | Path | None = None,
                   root: str | Path | None = None, control: str = "DMSO",
                   check_files: bool = True, output: str | Path | None = None,
                   **columns: str | None) -> pd.DataFrame:
    """A screen from a CellProfiler (or JUMP) LoadData CSV and an optional treatment table
    (see :func:`cellmorph.datasets.loaddata.index_loaddata`), written to ``output`` when
    given.

    Examples
    --------
    >>> index_loaddata(load_data)["Metadata_Compound"].nunique() > 1
    True
    """
    return _write_index(loaddata.index_loaddata, output, (path, treatments), path=path,
                        treatments=treatments, root=root, control=control,
                        check_files=check_files, **columns)


def profile(config: str | Path | dict | ProfileConfig | None = None, *,
            index: str | Path | pd.DataFrame | None = None, output: str | Path | None = None,
            h5ad: bool = False, overwrite: bool = False, progress: bool = True,
            **settings: Any) -> ProfileResult:
    """Deep-feature profiles of a screen with a frozen network (Pawlowski et al. 2016).

    Parameters
    ----------
    config
        A YAML file, dict or :class:`~cellmorph.config.ProfileConfig`; keyword settings
        (``model=``, ``weights=``, ``preprocess=``, ...) go on top.
    index
        The field-of-view index: a Parquet file from ``cellmorph index`` or a DataFrame.
    output
        The run folder: config, tile cache, per-plate results, and the profile tables
        ``profiles_image/well/treatment.parquet`` with ``timings.json``.
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
    from cellmorph.profiling.screen import profile_screen
    from cellmorph.reporting.writers import PROFILE_OUTPUTS, write_h5ad_profiles, write_profiles

    cfg, table = _run_config(ProfileConfig, config, index, output, settings)

    def finish(result: ProfileResult) -> None:  # while the run still holds its folder
        write_profiles(result, cfg.output)
        if h5ad:
            write_h5ad_profiles(result, cfg.output)

    return profile_screen(cfg, progress_bars=progress, overwrite=overwrite, index_table=table,
                          finish=finish, outputs=PROFILE_OUTPUTS)


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
    from cellmorph.evaluation.profiles import evaluate_profiles
    from cellmorph.reporting.writers import write_evaluation

    cfg = make_config(EvaluateConfig, config, **settings)
    if _kind_of(profiles) == "ProfileResult":
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
          overwrite: bool = False, progress: bool = True,
          **settings: Any) -> CVResult | WeakTrainingResult:
    """Fine-tune with cross-validation (leave-one-compound-out by default; Kensert et al. 2019),
    or, with ``label="compound"`` or ``"treatment"``, train on the screen's own weak labels
    (one model per seed, no MoA read; :func:`embed` turns it into profiles).

    Parameters
    ----------
    config
        A YAML file, dict or :class:`~cellmorph.config.TrainConfig`; keyword settings
        (``model=``, ``epochs=``, ``seeds=``, ``folds=``, ...) go on top.
    index, output
        The field-of-view index (file or DataFrame) and the run folder (fold outputs, and
        the per-level predictions, metrics and plots).
    overwrite
        Start afresh in a run folder made with another configuration (deletes its results);
        without it such a folder is refused, and a folder of the same configuration resumes
        (more folds or seeds may be added to it).

    Returns
    -------
    CVResult
        Per seed: the predictions at each level and the metrics; ``.summary``: mean +- SEM.
        A weakly supervised run returns a :class:`WeakTrainingResult` (its models and
        losses) instead.

    Examples
    --------
    >>> result = train(index=index, output=tmp / "loco", model="tf_efficientnet_lite0",
    ...                preset="fast", epochs=1, folds=["emetine", "cytochalasin B"],
    ...                preprocess={"grid": [1, 1], "tile_size": 32, "illumination": False},
    ...                progress=False)
    >>> result.seeds[0].folds
    ['cytochalasin B', 'emetine']
    """
    from cellmorph.evaluation.cv_scores import summarise_cv
    from cellmorph.reporting.writers import TRAIN_OUTPUTS, write_cv, write_weak
    from cellmorph.training.fold_jobs import TrainingRun, run_folds
    from cellmorph.training.weak import summarise_weak

    cfg, table = _run_config(TrainConfig, config, index, output, settings)
    results: list[CVResult | WeakTrainingResult] = []

    def finish(run: TrainingRun) -> None:  # while the run still holds its folder
        if cfg.weak_label:
            results.append(summarise_weak(run))
            write_weak(results[0], cfg.output)
        else:
            results.append(summarise_cv(run))
            write_cv(results[0], cfg.output)

    run_folds(cfg, progress_bars=progress, overwrite=overwrite, index_table=table, finish=finish,
              outputs=TRAIN_OUTPUTS)
    return results[0]


def embed(run: str | Path, *, output: str | Path | None = None, seed: int | None = None,
          h5ad: bool = False, overwrite: bool = False, progress: bool = True,
          **settings: Any) -> ProfileResult:
    """Profiles from a trained network's penultimate layer, in the layout ``profile`` writes
    (image, well, treatment; ``Feature_`` columns), so that :func:`evaluate`, :func:`report`
    and :func:`export` take them as they are.

    From a weakly supervised run (``label: compound|treatment``) one model embeds the screen.
    From a leave-one-compound-out run each compound's images are embedded by the fold model
    that never saw it (``Metadata_Fold`` says which), the controls and unlabelled compounds
    by the first fold's, and each model's features are centred on the controls it embedded
    on the same plate (:mod:`cellmorph.profiling.fold_models`).

    Parameters
    ----------
    run
        A ``cellmorph train`` folder, finished (for LOCO: every fold, models kept).
    output
        The embedding's run folder (default ``RUN/embed``): a profiling run of its own, whose
        ``config.yaml`` names the weights files it used; the tile cache is the training run's.
    seed
        Which seed's models (default: the run's first).
    settings
        ``batch_size=``, ``device=``, ``precision=``, ``aggregate=``, ``executor=`` ...

    Examples
    --------
    >>> weak = train(index=index, output=tmp / "weak", model="tf_efficientnet_lite0",
    ...              label="compound", preset="fast", epochs=1, freeze_stages=5,
    ...              preprocess={"grid": [1, 1], "tile_size": 32}, progress=False)
    >>> profiles = embed(tmp / "weak", progress=False)
    >>> Path(profiles.config.weights) == weak.models[0], (tmp / "weak" / "embed").is_dir()
    (True, True)
    """
    from cellmorph.reporting.writers import EMBED_FOLDER
    from cellmorph.training.weak import run_models

    found = run_models(run, seed)
    train_cfg = found.config
    cfg = make_config(ProfileConfig, {
        "index": str(train_cfg.index), "output": str(output or Path(run) / EMBED_FOLDER),
        "cache_dir": str(train_cfg.cache_dir or train_cfg.output / "cache"),
        "model": train_cfg.model, "weights": str(found.weights), "channel_mode": "rgb",
        "rgb_map": train_cfg.rgb_map, "preprocess": train_cfg.preprocess.model_dump(),
        "precision": train_cfg.precision, "device": train_cfg.device,
        "channels_last": train_cfg.channels_last,
        "fold_models": None if found.fold_models is None
        else {k: str(v) for k, v in found.fold_models.items()},
        "fold_by": train_cfg.fold_by}, **settings)
    return profile(cfg, h5ad=h5ad, overwrite=overwrite, progress=progress)


def compare_init(config: str | Path | dict | TrainConfig, *, output: str | Path | None = None,
                 inits: tuple[str, ...] = ("imagenet", "xavier"), whole_network: bool = True,
                 overwrite: bool = False, progress: bool = True,
                 **settings: Any) -> dict[str, CVResult]:
    """Pretrained vs Xavier-initialised fine-tuning over the same folds, seeds and budget
    (Kensert et al. 2019, Fig. 4); each run goes to ``OUTPUT/<init>``.

    As in the paper, both arms fine-tune the whole network (``whole_network``): a frozen or
    cached trunk in the config is switched off, since a frozen random trunk would compare a
    head on random features with a fine-tuned network. Each result says what it trained.

    Examples
    --------
    >>> results = compare_init({"index": str(tmp / "loco" / "index.parquet"),
    ...                         "output": str(tmp / "init"), "model": "tf_efficientnet_lite0",
    ...                         "preset": "fast", "epochs": 1, "folds": ["emetine"],
    ...                         "preprocess": {"grid": [1, 1], "tile_size": 32}},
    ...                        progress=False)
    >>> sorted(results), (tmp / "init" / "compare_init.png").is_file()
    (['imagenet', 'xavier'], True)
    """
    from cellmorph.reporting.writers import write_comparison

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
    >>> result = translocation(index_bbbc014(bbbc014_sample), progress=False)
    >>> result.scores["auc"], result.scores["holdout"]
    (1.0, 'Metadata_CellLine')
    """
    from cellmorph.evaluation.readout import translocation_readout
    from cellmorph.profiling.translocation import TranslocationSettings
    from cellmorph.reporting.writers import write_translocation

    settings = TranslocationSettings(nuclei=nuclei, reporter=reporter, ring=ring)
    result = translocation_readout(read_index(index), settings, positive=positive,
                                   default_positive=POSITIVE, progress_bar=progress)
    if output is not None:
        write_translocation(result, output)
    return result


def explain(run: str | Path, *, output: str | Path | None = None,
            layers: list[str] | None = None, filters: int = 2, size: int = 128,
            steps: int = 128, crops_per_moa: int = 2, seed: int = 0, device: str = "auto",
            progress: bool = True) -> ExplainResult:
    """What the network of a run sees: activation maximisation of chosen filters (pretrained
    beside fine-tuned) and Grad-CAM over example crops of each MoA; the figures are written
    to ``output`` when given (the command line's default, and what the report shows, is
    ``RUN/explain``).

    Examples
    --------
    >>> result = explain(tmp / "loco", steps=2, size=32, filters=1, crops_per_moa=1,
    ...                  progress=False)
    >>> list(result.actmax)
    ['pretrained', 'fine-tuned (fold cytochalasin B)']
    """
    from cellmorph.interpret.run import explain_run
    from cellmorph.reporting.writers import write_explain

    result = explain_run(run, layers=layers, filters=filters, size=size, steps=steps,
                         crops_per_moa=crops_per_moa, seed=seed, device=device,
                         progress_bar=progress)
    if output is not None:
        write_explain(result, output)
    return result


def report(source: str | Path, *, output: str | Path | None = None) -> ReportPage:
    """One self-contained HTML page for a run folder (profiling, fine-tuning, both, a
    compare-init folder) or a bare ``predictions_treatment.csv``: written to ``output`` (an
    ``.html`` file, its figures as PNG in ``figures/`` beside it) when given, else kept in
    memory (a notebook shows it inline).

    Examples
    --------
    >>> page = report(tmp / "loco")
    >>> page.path is None and "<html" in page.html
    True
    """
    from cellmorph.reporting.html import write_report

    return write_report(source, output)


def describe(result: Any) -> str:
    """A result in words, as the command line prints it: an index (DataFrame), an
    evaluation, a cross-validation run, several runs or evaluations by name (one table), or
    a translocation readout.

    Examples
    --------
    >>> print(describe(evaluate("ljosa2013", map=False, conformal=False, novelty=False)))
    ... # doctest: +ELLIPSIS
    103 treatments, 38 compounds, 12 MoAs (...)
    ...
    """
    from cellmorph.reporting import text

    if isinstance(result, pd.DataFrame):
        return text.format_index_summary(summarize(result))
    if isinstance(result, dict) and result:
        kinds = {_kind_of(r) for r in result.values()}
        if kinds == {"CVResult"}:
            return "\n".join(text.format_cv(r) for r in result.values())
        if kinds == {"EvaluationResult"}:
            return text.format_profile_comparison(result)  # several profile sets, one table
    return _by_kind(result, {"EvaluationResult": text.format_evaluation,
                             "CVResult": text.format_cv,
                             "TranslocationResult": text.format_translocation,
                             "WeakTrainingResult": text.format_weak,
                             "ScreenCalls": text.format_screen_calls}, "describe")


# Where each typed result is defined. A result can only exist once its module was imported,
# so its kind is found among the loaded modules: describing an evaluation loads no torch.
_RESULT_MODULES = {"EvaluationResult": "cellmorph.evaluation.profiles",
                   "ScreenCalls": "cellmorph.evaluation.calls",
                   "CVResult": "cellmorph.evaluation.cv_scores",
                   "TranslocationResult": "cellmorph.evaluation.readout",
                   "WeakTrainingResult": "cellmorph.training.weak",
                   "ProfileResult": "cellmorph.profiling.screen"}


def _kind_of(value: Any) -> str | None:
    """The name of ``value``'s result class (see :data:`_RESULT_MODULES`), None for others."""
    import sys

    for name, module in _RESULT_MODULES.items():
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(value, getattr(loaded, name)):
            return name
    return None


def _by_kind(result: Any, builders: dict[str, Any], what: str) -> Any:
    """The builder for ``result``'s kind, applied to it."""
    build = builders.get(_kind_of(result) or "")
    if build is None:
        raise TypeError(f"{what}: nothing for a {type(result).__name__}")
    return build(result)


def figures(result: Any) -> dict[str, Figure]:
    """The figures of an evaluation, a cross-validation run or a translocation readout, as
    matplotlib figures (what the writers save as ``<name>.png``), for a notebook to show.

    Examples
    --------
    >>> shown = figures(evaluate("ljosa2013", map=False, novelty=False))
    >>> sorted(shown)[:3], type(shown["conformal"]).__name__
    (['conformal', 'confusion_nsc_cosine', 'confusion_nsc_euclidean'], 'Figure')
    """
    from cellmorph.reporting import figures as drawn

    return _by_kind(result, {"EvaluationResult": drawn.evaluation_figures,
                             "CVResult": drawn.cv_figures,
                             "TranslocationResult": drawn.translocation_figures,
                             "WeakTrainingResult": drawn.weak_figures}, "figures")


def export(profiles: str | Path | pd.DataFrame, output: str | Path) -> Path:
    """A profile table (file or DataFrame) as AnnData (``.h5ad``: obs = ``Metadata_``
    columns, X = features) for scverse tools; or a folder of per-plate tables (a profiling
    run's ``cells/``: one observation per cell) streamed plate by plate into one ``.h5ad`` or
    ``.parquet`` file.

    Examples
    --------
    >>> export(evaluate("ljosa2013", map=False, conformal=False, novelty=False).wells,
    ...        tmp / "wells.h5ad").name
    'wells.h5ad'
    """
    output = Path(output)
    folder = not isinstance(profiles, pd.DataFrame) and Path(profiles).is_dir()
    suffixes = (".h5ad", ".parquet") if folder else (".h5ad",)
    if output.suffix not in suffixes:
        raise CellmorphError(f"-o {output}: give a file name ending in {' or '.join(suffixes)}")
    if isinstance(profiles, pd.DataFrame):
        return write_h5ad(profiles, output)
    check_not_input(output, Path(profiles))
    if folder:
        if output.absolute().parent == Path(profiles).absolute():
            raise CellmorphError(f"-o {output}: write the export outside {profiles} (the "
                                 "folder it reads)")
        parts = sorted(Path(profiles).glob("*.parquet"))  # read only: never deleted
        if not parts:
            raise CellmorphError(f"{profiles}: no .parquet tables in this folder; give a "
                                 "profiling run's cells/ folder or a profile table")
        from cellmorph.reporting.anndata import write_h5ad_parts, write_parquet_parts

        write = write_h5ad_parts if output.suffix == ".h5ad" else write_parquet_parts
        return write(parts, output)
    return write_h5ad(read_profiles(profiles, annotate=False), output)


def config_reference(output: str | Path | None = None) -> str:
    """Every key of the profile, evaluate and train config files, with its description, as
    Markdown; written to ``output`` when given.

    Examples
    --------
    >>> "## train" in config_reference()
    True
    """
    text = reference_markdown()
    if output is not None:
        write_text(text, output)
    return text


# What `predict` may set: how the network runs, never what it computes (the run's model,
# weights and preprocessing make the reference profiles a new screen is compared with).
PREDICT_SETTINGS = ("device", "precision", "batch_size", "num_workers", "executor",
                    "ray_address")
MODEL_PREDICT_SETTINGS = ("device", "precision")  # a training run's fold models


def predict(run: str | Path, index: str | Path | pd.DataFrame, *, output: str | Path,
            overwrite: bool = False, progress: bool = True,
            **settings: Any) -> ScreenCalls:
    """Calls for every treated compound of a new screen, from a run's labelled treatments.

    From a profiling run (or ``cellmorph embed``'s), the screen is profiled with the run's
    network and preprocessing, each screen's plates are normalised on their own controls,
    and every treated compound gets a call, conformal sets, a novelty verdict and its
    nearest references (:func:`cellmorph.evaluation.profiles.call_screen`). From a
    leave-one-compound-out training run, the screen is preprocessed as the run was and
    predicted by the run's fold models: a compound the run never labelled by all of them
    (their median), one it trained on by the fold that held it out, as the run's own
    out-of-fold predictions the sets are calibrated on
    (:mod:`cellmorph.training.apply`).

    Parameters
    ----------
    run
        A ``cellmorph profile`` folder (or ``cellmorph embed``'s) whose screen has labelled
        treatments and controls, or a finished ``cellmorph train`` folder (leave-one-out,
        every fold's model kept: ``keep_models: embed``, the default).
    index
        The new screen's index; its stains are matched to the run's by name.
    output
        A new run folder: the screen's profiles (or its fold models' crop predictions),
        ``calls_treatment.csv`` and ``predict.json`` (the run it came from, what backs the
        calls).
    settings
        ``device=``, ``precision=``; for a profiling run also ``batch_size=``,
        ``num_workers=``, ``executor=``.

    Examples
    --------
    >>> _ = profile(index=index, output=tmp / "ref", preprocess={"grid": [1, 1],
    ...             "tile_size": 32}, precision="fp32", progress=False)
    >>> calls = predict(tmp / "ref", index, output=tmp / "new", precision="fp32",
    ...                 progress=False)
    >>> calls.n_truth == len(calls.calls.table), (tmp / "new" / "calls_treatment.csv").is_file()
    (True, True)
    """
    from cellmorph.runs import run_kind

    run = Path(run)
    if Path(output).resolve() == run.resolve():
        raise CellmorphError(f"{output} is the reference run (predict's input): choose "
                             "another output folder")
    predicting = _predict_with_models if run_kind(run) == "train" else _predict_from_profiles
    return predicting(run, index, Path(output), overwrite, progress, settings)


def _refused_settings(settings: dict[str, Any], allowed: Sequence[str]) -> dict[str, Any]:
    """The settings given (None: not given), refused where predict cannot honour them."""
    refused = sorted({k for k, v in settings.items() if v is not None} - set(allowed))
    if refused:
        raise CellmorphError(f"predict uses the run's model, weights and preprocessing; "
                             f"{refused[0]} cannot differ (settable: {', '.join(allowed)})")
    return {k: v for k, v in settings.items() if v is not None}


def _run_index(run: Path, cfg: ProfileConfig | TrainConfig) -> pd.DataFrame:
    """The run's index (its stains), checked to describe what a new screen can repeat."""
    if cfg.preprocess.tiles == "cells" and cfg.preprocess.cells.locations is not None:
        raise CellmorphError(f"{run} cut its cells at the nuclei of a locations file "
                             f"({cfg.preprocess.cells.locations}) that covers its own screen "
                             "only; predict a new screen from a run that finds the nuclei "
                             "itself (cells.locations unset)")
    if not Path(cfg.index).is_file():
        raise CellmorphError(f"{run}: its index {cfg.index} is gone; predict reads the "
                             "run's stains from it (put it back, or run it again)")
    return read_index(cfg.index)


def _predict_from_profiles(run: Path, index: str | Path | pd.DataFrame, output: Path,
                           overwrite: bool, progress: bool, settings: dict) -> ScreenCalls:
    """:func:`predict` from a profiling run."""
    from cellmorph.evaluation.profiles import call_screen
    from cellmorph.profiling.screen import profile_screen
    from cellmorph.reporting.writers import PREDICT_OUTPUTS, write_profiles, write_screen_calls

    reference, run_cfg, evaluate_cfg = _reference_run(run)
    given = _refused_settings(settings, PREDICT_SETTINGS)
    run_channels = sc.channels_of(_run_index(run, run_cfg))
    screen = _checked_screen(read_index(index), run_channels, str(index), run)
    _check_plate_controls(screen, evaluate_cfg, str(index))
    cfg = make_config(ProfileConfig, {
        **run_cfg.model_dump(mode="json", exclude={"index", "output", "cache_dir"}),
        "index": str(output / "index.parquet"), "output": str(output)}, **given)

    def finish(result: ProfileResult) -> None:  # while the run still holds its folder
        write_profiles(result, cfg.output)
        found.append(call_screen(reference, result.wells, evaluate_cfg))
        write_screen_calls(found[0], run, evaluate_cfg, cfg.output)

    found: list[ScreenCalls] = []
    profile_screen(cfg, progress_bars=progress, overwrite=overwrite, index_table=screen,
                   finish=finish, outputs=PREDICT_OUTPUTS)
    return found[0]


def _predict_with_models(run: Path, index: str | Path | pd.DataFrame, output: Path,
                         overwrite: bool, progress: bool, settings: dict) -> ScreenCalls:
    """:func:`predict` from a leave-one-out training run's fold models."""
    from cellmorph.evaluation.calls import CLASSIFIER_ROUTE, REFIT_ROUTE
    from cellmorph.evaluation.cv_scores import call_screen_with_models
    from cellmorph.reporting.load import load_training
    from cellmorph.reporting.writers import MODEL_PREDICT_OUTPUTS, write_screen_calls
    from cellmorph.training.apply import predict_screen, run_models

    run_cfg = load_config(run / "config.yaml", TrainConfig)
    given = _refused_settings(settings, MODEL_PREDICT_SETTINGS)
    if run_cfg.weak_label:
        raise CellmorphError(f"{run} is a weakly supervised run: it predicts no MoA; embed "
                             f"it (`cellmorph embed {run}`) and predict from RUN/embed")
    result = load_training(run)
    found = run_models(run, run_cfg, {s.seed: s.folds for s in result.seeds},
                       result.folds_total, result.classes)
    if result.ensemble is None or result.folds_done < 2:
        raise CellmorphError(f"{run}: calls are calibrated on the out-of-fold predictions "
                             "of two folds or more; the run has fewer")
    screen = _checked_screen(read_index(index), sc.channels_of(_run_index(run, run_cfg)),
                             str(index), run)
    cfg = make_config(TrainConfig, {
        **run_cfg.model_dump(mode="json", exclude={"index", "output", "cache_dir"}),
        "index": str(output / "index.parquet"), "output": str(output)}, **given)
    calls: list[ScreenCalls] = []

    def finish(crops: list[pd.DataFrame]) -> None:  # while the run still holds its folder
        calls.append(call_screen_with_models(
            result, crops, REFIT_ROUTE if found.refitted else CLASSIFIER_ROUTE))
        write_screen_calls(calls[0], run, run_cfg, output)

    predict_screen(cfg, found, index_table=screen, overwrite=overwrite, progress_bars=progress,
                   finish=finish, outputs=MODEL_PREDICT_OUTPUTS)
    return calls[0]


def _reference_run(run: Path) -> tuple[pd.DataFrame, ProfileConfig, EvaluateConfig]:
    """A profiling run's well profiles, config and evaluation settings, checked to hold what
    calls are calibrated on."""
    from cellmorph.evaluation.calls import TOO_FEW, calibration_references
    from cellmorph.evaluation.profiles import prepare_profiles
    from cellmorph.runs import run_kind

    kind = run_kind(run)
    if kind == "train":
        raise CellmorphError(f"{run} is a fine-tuning run: embed it first (`cellmorph embed "
                             f"{run}`) and predict from its profiles (RUN/embed)")
    wells_path = run / "profiles_well.parquet"
    if kind != "profile" or not wells_path.is_file():
        raise CellmorphError(f"{run} is not a finished `cellmorph profile` run (no "
                             "profiles_well.parquet); give the folder of one")
    wells = pd.read_parquet(wells_path)
    labelled = sc.treatments(wells)
    if labelled.empty or calibration_references(
            sc.aggregate(labelled, sc.TREATMENT_KEYS))[sc.MOA].nunique() < 2:
        raise CellmorphError(f"{run}: {TOO_FEW}; predict from a run whose screen has them")
    settings = run / "evaluation" / "evaluate_config.yaml"
    evaluate_cfg = load_config(settings, EvaluateConfig) if settings.is_file() else EvaluateConfig()
    try:  # the reference's own normalisation, checked before anything is profiled
        prepare_profiles(wells, evaluate_cfg)
    except CellmorphError as exc:
        raise CellmorphError(f"{run} cannot be a reference with its evaluation settings "
                             f"({settings if settings.is_file() else 'the defaults'}): "
                             f"{exc} (`cellmorph evaluate {run} ...` saves other settings "
                             "in RUN/evaluation/evaluate_config.yaml)") from None
    return wells, load_config(run / "config.yaml", ProfileConfig), evaluate_cfg


def _check_plate_controls(screen: pd.DataFrame, cfg: EvaluateConfig, source: str) -> None:
    """Refuse, before anything is profiled, a plate the reference's normalisation cannot
    centre on its own controls (fewer than two control wells in the index; fields that
    yield no tile can still take a plate below two later)."""
    if cfg.normalize == "none" or cfg.normalize_by == "global":
        return
    wells = screen.loc[screen[sc.ROLE] == sc.ROLE_CONTROL, [sc.PLATE, sc.WELL]]
    counts = wells.drop_duplicates().groupby(sc.PLATE).size().reindex(
        screen[sc.PLATE].unique(), fill_value=0)
    few = counts[counts < 2]
    if len(few):
        raise CellmorphError(
            f"{source}: plate {few.index[0]} has {few.iloc[0]} control well(s); the "
            "reference normalises each plate on its own controls, which needs at least 2 "
            "(add control wells, or evaluate the reference with normalize_by: global)")


def _checked_screen(screen: pd.DataFrame, channels: list[str], source: str,
                    run: Path) -> pd.DataFrame:
    """The new screen's index with the run's stain order, checked to have what a call
    needs: treated fields, and control fields to normalise its plates on."""
    from cellmorph.datasets.index import match_channels

    screen = match_channels(screen, channels, source, f"run {run}")
    if not (screen[sc.ROLE] == sc.ROLE_CONTROL).any():
        raise CellmorphError(f"{source}: no control field; a new screen's plates are "
                             "normalised on their own controls (mark them in the plate map)")
    if (screen[sc.ROLE] == sc.ROLE_CONTROL).all():
        raise CellmorphError(f"{source}: only control fields; nothing to call")
    return screen
