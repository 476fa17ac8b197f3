"""Reading a run folder (or a bare prediction table) back into the typed results a report is
built from: scores are recomputed from the durable outputs (fold predictions, profile
tables), never parsed out of summaries."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cellmorph import schema as sc
from cellmorph.config import EvaluateConfig, ProfileConfig, TrainConfig, config_yaml, load_config
from cellmorph.datasets.index import read_index, summarize
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.calibration import CalibrationResult, calibrate_loco
from cellmorph.evaluation.calls import CALLS_FILE, Calls, ScreenCalls
from cellmorph.evaluation.conformal import ConformalResult, conformal_from_probabilities
from cellmorph.evaluation.cv_scores import CVResult, summarise_cv
from cellmorph.evaluation.predictions import confusion
from cellmorph.evaluation.profiles import EvaluationResult, evaluate_profiles
from cellmorph.log import get_logger
from cellmorph.profiling.screen import ProfileResult
from cellmorph.reporting.writers import PREDICT_RECORD, QC_FILE
from cellmorph.runs import read_provenance, run_kind
from cellmorph.training.fold_jobs import (
    NOVELTY_FOLDS,
    REFIT,
    SeedRun,
    TrainingRun,
    fold_dir,
    load_fold,
    trained_layers,
)

log = get_logger(__name__)

@dataclass
class PredictionTable:
    """A bare per-treatment prediction table (from cellmorph or any other model or paper)."""

    source: Path
    table: pd.DataFrame
    conformal: ConformalResult | None
    calibration: CalibrationResult | None = None

    @property
    def accuracy(self) -> float:
        """Fraction of treatments whose most probable MoA is the true one."""
        truth = self.table[sc.MOA].astype(str).to_numpy()
        return float((sc.predicted_classes(self.table) == truth).mean())

    def confusion(self) -> pd.DataFrame:
        """True vs predicted MoA."""
        predicted = pd.Series(sc.predicted_classes(self.table), index=self.table.index)
        return confusion(self.table[sc.MOA], predicted)


@dataclass(repr=False)
class PredictedScreen:
    """A ``cellmorph predict`` folder's calls, read back, and whose fields they show."""

    result: ScreenCalls
    reference: Path  # the run the screen was called from
    index: Path  # the new screen's index
    reference_index: Path | None  # the reference run's (its treatments are the neighbours)


def load_predicted(folder: Path) -> PredictedScreen:
    """The calls ``cellmorph predict`` wrote in ``folder`` and what backs them."""
    try:
        record = json.loads((folder / PREDICT_RECORD).read_text())
        summary = record["calls"]
        table = pd.read_csv(folder / CALLS_FILE)
    except (OSError, ValueError, KeyError) as exc:
        raise CellmorphError(f"{folder}: its {PREDICT_RECORD} or {CALLS_FILE} cannot be read "
                             f"({exc}); run cellmorph predict there again") from None
    for column in [c for c in table.columns if c.startswith("Set_")]:
        table[column] = table[column].fillna("")  # an empty set, as written
    coverage = dict(zip(map(float, summary["confidences"]), summary["labelled_coverage"],
                        strict=True))
    calls = Calls(table, summary["route"], summary["labelled_accuracy"], coverage,
                  summary["labelled_false_alarm"])
    result = ScreenCalls(calls, record.get("truth_accuracy"), int(record.get("n_truth", 0)),
                         record.get("notes", {}), record.get("skipped", {}))
    reference = Path(record["run"])
    kind = run_kind(reference)
    try:
        reference_index = Path(load_config(reference / "config.yaml", TrainConfig if
                                           kind == "train" else ProfileConfig).index)
    except CellmorphError:  # the reference moved: the page shows the screen's fields only
        reference_index = None
    return PredictedScreen(result, reference, folder / "index.parquet", reference_index)


@dataclass
class RunBundle:
    """Everything found under a folder: runs of any kind, their provenance and extras."""

    source: Path
    profile: ProfileResult | None = None
    evaluation: EvaluationResult | None = None
    training: CVResult | None = None
    comparison: dict[str, CVResult] = field(default_factory=dict)
    table: PredictionTable | None = None
    provenance: dict | None = None
    configs: dict[str, str] = field(default_factory=dict)  # name -> YAML text
    dataset: dict | None = None
    figures: dict[str, Path] = field(default_factory=dict)  # extra PNGs (explain, ...)
    predicted: PredictedScreen | None = None  # a `cellmorph predict` folder's calls

    @property
    def synthetic(self) -> bool:
        """Made from SYNTHETIC images?"""
        tables = [self.profile.wells if self.profile else None,
                  self.table.table if self.table else None]
        if self.training is not None:
            tables += [s.crops for s in self.training.seeds]
        if self.predicted is not None and self.predicted.index.is_file():
            tables.append(read_index(self.predicted.index))
        return any(sc.is_synthetic(t) for t in tables)




def load_training(folder: Path) -> CVResult:
    """A training run's fold outputs, scored again."""
    cfg = load_config(folder / "config.yaml", TrainConfig)
    if cfg.weak_label:
        raise CellmorphError(f"{folder} is a weakly supervised run ({cfg.label} labels): it "
                             f"predicts no MoA; report its profiles: cellmorph embed "
                             f"{folder}, then cellmorph report {folder / 'embed'}")
    seeds = []
    for seed in cfg.seeds:
        seed_dir = folder / f"seed{seed}"
        done = [load_fold(p.parent) for p in (seed_dir / "folds").glob("*/predictions.parquet")]
        refit = fold_dir(seed_dir, REFIT, REFIT)
        refitted = (load_fold(refit) if cfg.refit and (refit / "predictions.parquet").is_file()
                    else None)
        if done:  # in fold order, as the run made them
            seeds.append(SeedRun(seed, seed_dir, sorted(done, key=lambda f: f.name), refitted))
    if not seeds:
        raise CellmorphError(f"{folder}: no finished fold to report; train first")
    metrics = folder / "metrics.json"
    total = json.loads(metrics.read_text()).get("folds_total") if metrics.is_file() else None
    classes = sc.classes_of(seeds[0].folds[0].predictions)
    run = TrainingRun(cfg, classes, total or len(seeds[0].folds), seeds,
                      (read_provenance(folder) or {}).get("runtime", {}), trained_layers(cfg))
    novelty = folder / f"seed{cfg.seeds[0]}" / NOVELTY_FOLDS
    if cfg.novelty and novelty.is_dir():
        run.novelty = SeedRun(cfg.seeds[0], novelty.parent, sorted(
            (load_fold(p.parent) for p in novelty.glob("*/predictions.parquet")),
            key=lambda f: f.name))
    return summarise_cv(run)


def load_profiling(folder: Path) -> tuple[ProfileResult, EvaluationResult | None]:
    """A profiling run's tables, and their evaluation with the settings it was run with."""
    cfg = load_config(folder / "config.yaml", ProfileConfig)
    tables = {}
    for level in ("image", "well", "treatment"):
        path = folder / f"profiles_{level}.parquet"
        if not path.is_file():
            raise CellmorphError(f"{path} not found; the profiling run is unfinished")
        tables[level] = pd.read_parquet(path)
    timings = folder / "timings.json"
    qc = folder / QC_FILE
    result = ProfileResult(cfg, tables["image"], tables["well"], tables["treatment"],
                           (read_provenance(folder) or {}).get("runtime", {}),
                           json.loads(timings.read_text()) if timings.is_file() else {},
                           pd.read_parquet(qc) if qc.is_file() else None)
    settings = folder / "evaluation" / "evaluate_config.yaml"
    ecfg = load_config(settings, EvaluateConfig) if settings.is_file() else EvaluateConfig()
    try:
        evaluation = evaluate_profiles(result.wells, ecfg)
    except CellmorphError:
        evaluation = None  # e.g. no controls or a single MoA: profiles only
    return result, evaluation


def load_table(path: Path) -> PredictionTable:
    """A per-treatment prediction table: compound, MoA and ``Prob_<MoA>`` columns."""
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for damaged files
        raise CellmorphError(f"{path}: cannot be read as a table ({exc})") from exc
    if not sc.prob_columns(table) or sc.MOA not in table.columns:
        raise CellmorphError(f"{path}: not a prediction table (needs Metadata_MoA and "
                             "Prob_<MoA> columns, as in predictions_treatment.csv)")
    check_probabilities(table, path)
    conformal = calibration = None
    if sc.COMPOUND in table.columns and table[sc.COMPOUND].nunique() > 1:
        conformal = conformal_from_probabilities(table)
        calibration = calibrate_loco(table)
    return PredictionTable(path, table, conformal, calibration)


def check_probabilities(table: pd.DataFrame, path: Path) -> None:
    """Refuse what cannot be probabilities (missing, negative, above 1); say where a row's
    do not sum to 1 (medians of crop probabilities, as cellmorph aggregates them, need not;
    scores of another kind would not either)."""
    columns = sc.prob_columns(table)
    probs = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        value = table.iloc[row][columns[col]]
        raise CellmorphError(f"{path}: row {row + 1}: {columns[col]} is {value!r}; Prob_ "
                             "columns must hold probabilities from 0 to 1")
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1) > 1e-3
    if off.any():
        log.info("%s: %d of %d rows' probabilities do not sum to 1 (row %d: %.3g), as medians "
                 "of crop probabilities need not; each MoA's is read on its own",
                 path, int(off.sum()), len(sums), int(np.argmax(off)) + 1, sums[np.argmax(off)])


def load_bundle(source: Path | str) -> RunBundle:
    """Whatever is at ``source``: a profile or train run folder, a compare-init folder, a
    folder holding runs (the demo's), or a prediction table."""
    source = Path(source)
    if not source.exists():
        raise CellmorphError(f"{source} not found; give a run folder or a prediction table")
    bundle = RunBundle(source)
    if source.is_file():
        bundle.table = load_table(source)
        return bundle
    folders = [source] if run_kind(source) else sorted(
        p for p in source.iterdir() if p.is_dir() and run_kind(p))
    if (source / "compare_init.json").is_file():
        for name in json.loads((source / "compare_init.json").read_text()):
            if run_kind(source / name) == "train":
                bundle.comparison[name] = load_training(source / name)
        folders = [f for f in folders if f.name not in bundle.comparison]
    for folder in folders:
        kind = run_kind(folder)
        if kind == "profile" and bundle.profile is None:
            bundle.profile, bundle.evaluation = load_profiling(folder)
            bundle.configs["profile"] = config_yaml(bundle.profile.config)
        elif kind == "train" and bundle.training is None:
            bundle.training = load_training(folder)
            bundle.configs["train"] = config_yaml(bundle.training.config)
        if (folder / PREDICT_RECORD).is_file() and bundle.predicted is None:
            bundle.predicted = load_predicted(folder)
            if kind == "predict":
                bundle.configs["predict"] = (folder / "config.yaml").read_text()
        bundle.provenance = bundle.provenance or read_provenance(folder)
        for name in ("actmax", "gradcam"):
            png = folder / "explain" / f"{name}.png"
            if png.is_file():
                bundle.figures[name] = png
    if bundle.comparison and bundle.training is None:
        bundle.training = next(iter(bundle.comparison.values()))
        bundle.configs["train"] = config_yaml(bundle.training.config)
        bundle.provenance = bundle.provenance or read_provenance(
            source / next(iter(bundle.comparison)))
    if not (bundle.profile or bundle.training or bundle.predicted):
        raise CellmorphError(f"{source} holds no cellmorph run (no run.json here or one level "
                             "down) and is not a prediction table")
    bundle.dataset = _dataset(bundle)
    return bundle


def _dataset(bundle: RunBundle) -> dict | None:
    if bundle.training or bundle.profile:
        index = (bundle.training.config if bundle.training else bundle.profile.config).index
    else:
        index = bundle.predicted.index
    try:
        return summarize(read_index(index))
    except CellmorphError:
        return None
