"""Scoring a cross-validated training run: accuracy per level and per epoch, over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cellmorph import schema as sc
from cellmorph.config import TrainConfig
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.calibration import (
    CALIBRATED_PREFIX,
    CalibrationResult,
    calibrate_loco,
)
from cellmorph.evaluation.calls import (
    CLASSIFIER_ROUTE,
    REFIT_ROUTE,
    Calls,
    CallsSummary,
    ScreenCalls,
    call_from_probabilities,
    with_truth,
)
from cellmorph.evaluation.conformal import (
    ConformalResult,
    conformal_from_probabilities,
)
from cellmorph.evaluation.ensemble import EnsembleResult, EnsembleSummary, ensemble_seeds
from cellmorph.evaluation.novelty import (
    NoveltySummary,
    novelty_from_probabilities,
    summarize_novelty,
)
from cellmorph.evaluation.predictions import (
    aggregate_probabilities,
    combine_models,
    confusion,
)
from cellmorph.records import ShortRepr, optional
from cellmorph.training.fold_jobs import SeedRun, TrainingRun

ACCURACY_KEYS = ("crop_accuracy", "image_accuracy", "well_accuracy", "treatment_accuracy")


@dataclass(frozen=True)
class Accuracy:
    """An accuracy over replicate seeds: the mean, its SEM (None for a single seed, whose
    spread is undefined) and each seed's value."""

    mean: float
    sem: float | None
    values: list[float]

    @classmethod
    def over(cls, values: Sequence[float]) -> Accuracy:
        array = np.asarray(values, dtype=float)
        return cls(float(array.mean()), sem(array), array.tolist())


@dataclass(frozen=True)
class EpochCurve:
    """Accuracy after each epoch: mean and SEM over seeds."""

    mean: list[float]
    sem: list[float | None]


@dataclass(frozen=True)
class ConformalLevel:
    """Coverage and set size at one confidence: mean over seeds, and of the ensemble (where
    there is one); the scheme used and the MoAs too small to be ruled out."""

    confidence: float
    coverage_mean_over_seeds: float
    set_size_mean_over_seeds: float
    ensemble_coverage: float | None = optional()
    ensemble_set_size: float | None = optional()
    scheme: str = ""
    too_few_calibration: list[str] = field(default_factory=list)
    calibration_needed: int = 0


@dataclass(frozen=True)
class ConformalSummary:
    """A run's conformal sets at every confidence, with the calibration in words."""

    scheme: str
    levels: list[ConformalLevel]


@dataclass(frozen=True)
class CalibrationSummary:
    """Expected calibration error before and after temperature scaling, mean over seeds."""

    method: str
    bins: int
    ece_before: float
    ece_after: float
    temperature_median: float


@dataclass(frozen=True)
class CVSummary:
    """A cross-validation run in numbers (``metrics.json`` is :func:`as_dict` of it)."""

    model: str
    weights: str
    seeds: list[int]
    report_level: str
    n_seeds: int
    folds_done: int
    folds_total: int
    trained: str
    crop_accuracy: Accuracy
    image_accuracy: Accuracy
    well_accuracy: Accuracy
    treatment_accuracy: Accuracy
    per_epoch_accuracy: EpochCurve
    n_treatments: int
    ensemble: EnsembleSummary
    conformal: ConformalSummary | None = optional()
    conformal_well: ConformalSummary | None = optional()
    calibration: CalibrationSummary | None = optional()
    novelty_not_evaluated: str | None = optional()
    novelty: NoveltySummary | None = optional()
    calls: CallsSummary | None = optional()
    calls_not_evaluated: str | None = optional()

    def accuracy(self, level: str) -> Accuracy:
        """The accuracy at ``level`` (crop, image, well or treatment)."""
        return getattr(self, f"{level}_accuracy")

    def partial(self) -> bool:
        """True when only some of the folds were run."""
        return self.folds_done != self.folds_total


@dataclass(repr=False)
class SeedResult(ShortRepr):
    """The scored predictions of one replicate seed."""

    seed: int
    crops: pd.DataFrame
    levels: dict[str, pd.DataFrame]  # image / well / treatment predictions
    metrics: dict
    folds: list[str] = field(default_factory=list)
    unknown: pd.DataFrame | None = None  # unlabelled treatments: median over the fold models

    @property
    def per_epoch_accuracy(self) -> list[float]:
        """Accuracy at the report level after each epoch."""
        return self.metrics["per_epoch_accuracy"]


@dataclass(repr=False)
class CVResult(ShortRepr):
    """A scored cross-validation run: every seed, and mean ± SEM over seeds."""

    config: TrainConfig
    classes: list[str]
    seeds: list[SeedResult]
    summary: CVSummary
    folds_total: int
    runtime: dict = field(default_factory=dict)
    ensemble: EnsembleResult | None = None  # the seeds combined (treatment level)
    conformal: dict[str, ConformalResult] = field(default_factory=dict)  # seed<S>, ensemble
    calibration: dict[str, CalibrationResult] = field(default_factory=dict)  # seed<S>
    conformal_well: dict[str, ConformalResult] = field(default_factory=dict)  # seed<S>
    novelty: pd.DataFrame | None = None  # leave-one-MoA-out, one row per held-out MoA
    calls: Calls | None = None  # the unlabelled treatments' calls

    @property
    def folds_done(self) -> int:
        """Folds predicted (per seed); fewer than ``folds_total`` when only some were run."""
        return len(self.seeds[0].folds) if self.seeds else 0

    def summary_table(self) -> pd.DataFrame:
        """Accuracy at each level, mean and SEM over seeds (what a notebook shows)."""
        return pd.DataFrame([{"level": level, "mean": round(acc.mean, 4), "sem": acc.sem,
                              "per seed": acc.values}
                             for level in ("crop", "image", "well", "treatment")
                             for acc in [self.summary.accuracy(level)]])

    def confusion(self, seed_index: int = 0) -> pd.DataFrame:
        """True vs predicted MoA at the report level for one seed."""
        final = self.seeds[seed_index].levels[self.config.report_level]
        return confusion(final[sc.MOA], final["predicted"])


def score_seed(seed: SeedRun, level: str) -> SeedResult:
    """Accuracy of one seed's out-of-fold predictions at every level and after every epoch."""
    crops = pd.concat([f.predictions for f in seed.folds], ignore_index=True)
    metrics: dict = {}
    levels = {lvl: aggregate_probabilities(crops, lvl) for lvl in sc.LEVELS}
    for lvl, agg in levels.items():
        metrics[f"{lvl}_accuracy"] = float(agg["correct"].mean())
        metrics[f"n_{lvl}s"] = int(len(agg))
    # Accuracy after each epoch: the same aggregation on each epoch's test predictions.
    per_epoch = []
    n_epochs = min(f.epoch_probs.shape[0] for f in seed.folds)
    prob_cols = sc.prob_columns(crops)
    for e in range(n_epochs):
        epoch = crops.copy()
        epoch[prob_cols] = np.concatenate([f.epoch_probs[e] for f in seed.folds])
        per_epoch.append(float(aggregate_probabilities(epoch, level)["correct"].mean()))
    metrics["per_epoch_accuracy"] = per_epoch
    metrics["crop_accuracy"] = float(
        (sc.predicted_classes(crops) == crops[sc.MOA].astype(str).to_numpy()).mean())
    # The unlabelled treatments: the refitted model's where the run has one, else the
    # median over the fold models.
    callers = [seed.refit] if seed.refit is not None else seed.folds
    queries = [aggregate_probabilities(f.queries, "treatment") for f in callers
               if f.queries is not None and len(f.queries)]
    return SeedResult(seed.seed, crops, levels, metrics, [f.name for f in seed.folds],
                      combine_models(queries) if queries else None)


def summarise_cv(run: TrainingRun) -> CVResult:
    """Score every seed of a run and summarise over seeds (mean ± SEM; the SEM of a single
    seed is undefined and given as None)."""
    cfg = run.config
    seeds = [score_seed(s, cfg.report_level) for s in run.seeds]
    ensemble = ensemble_seeds([s.levels["treatment"] for s in seeds], [s.seed for s in seeds])
    conformal, conformal_well = conformal_seeds(seeds, ensemble, cfg)
    calibration = calibrate_seeds(seeds)
    try:
        novelty, not_evaluated = score_novelty(run, seeds), None
    except CellmorphError as exc:  # e.g. a partial run: too few known compounds to calibrate
        novelty, not_evaluated = None, str(exc)
    calls, calls_not_evaluated = call_seeds(seeds, ensemble, cfg)
    curves = np.array([s.per_epoch_accuracy for s in seeds])
    summary = CVSummary(
        cfg.model, cfg.weights, list(cfg.seeds), cfg.report_level, len(seeds),
        len(seeds[0].folds), run.folds_total, run.trained,
        *(Accuracy.over([s.metrics[key] for s in seeds]) for key in ACCURACY_KEYS),
        EpochCurve(curves.mean(0).tolist(), [sem(c) for c in curves.T]),
        seeds[0].metrics["n_treatments"], ensemble.summary(),
        conformal=conformal_summary(conformal, cfg.confidences) if conformal else None,
        conformal_well=(conformal_summary(conformal_well, cfg.confidences)
                        if conformal_well else None),
        calibration=calibration_summary(calibration) if calibration else None,
        novelty_not_evaluated=not_evaluated,
        novelty=summarize_novelty(novelty) if novelty is not None else None,
        calls=calls.summary() if calls is not None else None,
        calls_not_evaluated=calls_not_evaluated)
    return CVResult(cfg, run.classes, seeds, summary, run.folds_total, run.runtime, ensemble,
                    conformal, calibration, conformal_well, novelty, calls)


def call_seeds(seeds: list[SeedResult], ensemble: EnsembleResult, cfg: TrainConfig
               ) -> tuple[Calls | None, str | None]:
    """Calls for the unlabelled treatments: each seed's median over its fold models, the
    seeds averaged as the ensemble averages them, calibrated on the ensemble's out-of-fold
    treatment probabilities. None (and why) where the run cannot calibrate them."""
    unknown = [s.unknown for s in seeds if s.unknown is not None]
    if not unknown:
        return None, None
    if len({f for s in seeds for f in s.folds}) < 2:
        return None, "calibration needs the out-of-fold predictions of two folds or more"
    try:
        return call_from_probabilities(
            ensemble.table, combine_models(unknown, "mean"), confidences=cfg.confidences,
            scheme=cfg.conformal_scheme, novelty_confidence=cfg.novelty_confidence,
            route=REFIT_ROUTE if cfg.refit else CLASSIFIER_ROUTE), None
    except CellmorphError as exc:
        return None, str(exc)


def call_screen_with_models(result: CVResult, crops: Sequence[pd.DataFrame],
                            route: str = CLASSIFIER_ROUTE) -> ScreenCalls:
    """Calls for another screen's treatments from a run's fold models' crop predictions
    (:func:`cellmorph.training.apply.predict_with`): per model to treatment level, the
    median over each seed's fold models (a compound the run labelled has one, the fold that
    held it out), the seeds averaged as the run's ensemble, calibrated on the run's
    out-of-fold ensemble probabilities. The screen's own labels only check the calls."""
    cfg = result.config
    if result.ensemble is None or len(result.seeds[0].folds) < 2:
        raise CellmorphError("calls are calibrated on the out-of-fold predictions of two "
                             "folds or more; the run has fewer")
    tables = [t for t in crops if len(t)]
    if not tables:
        raise CellmorphError("the screen has no treated crop any fold model may predict "
                             "(controls only, or compounds the run trained on without "
                             "holding them out whole)")
    seeds = sorted({int(t["Metadata_Seed"].iloc[0]) for t in tables})
    per_seed = [combine_models([aggregate_probabilities(t.drop(columns="Metadata_Seed"),
                                                        "treatment")
                                for t in tables if int(t["Metadata_Seed"].iloc[0]) == s])
                for s in seeds]
    queries = combine_models(per_seed, "mean") if len(per_seed) > 1 else per_seed[0]
    unknown = queries.drop(columns=[c for c in (sc.MOA, "predicted", "correct")
                                    if c in queries.columns])
    calls = call_from_probabilities(result.ensemble.table, unknown,
                                    confidences=cfg.confidences, scheme=cfg.conformal_scheme,
                                    novelty_confidence=cfg.novelty_confidence,
                                    labelled_compounds="other", route=route)
    truth = pd.concat(tables, ignore_index=True).drop_duplicates(sc.TREATMENT)
    return with_truth(calls, truth, {"seeds": seeds, "fold_models": len(tables)})


def conformal_seeds(seeds: list[SeedResult], ensemble: EnsembleResult, cfg: TrainConfig
                    ) -> tuple[dict[str, ConformalResult], dict[str, ConformalResult]]:
    """Conformal sets of every seed (and the ensemble) at treatment level, and of every seed
    at well level where ``conformal_levels`` asks for it; none when only one fold ran."""
    if len({f for s in seeds for f in s.folds}) < 2:  # calibration needs other compounds
        return {}, {}
    settings = {"confidences": cfg.confidences, "scheme": cfg.conformal_scheme}
    treatment, well = {}, {}
    if "treatment" in cfg.conformal_levels:
        treatment = {f"seed{s.seed}": conformal_from_probabilities(s.levels["treatment"],
                                                                   **settings) for s in seeds}
        treatment["ensemble"] = conformal_from_probabilities(ensemble.table, **settings)
    if "well" in cfg.conformal_levels:
        well = {f"seed{s.seed}": conformal_from_probabilities(s.levels["well"], level="well",
                                                              **settings) for s in seeds}
    return treatment, well


def score_novelty(run: TrainingRun, seeds: list[SeedResult]) -> pd.DataFrame | None:
    """The leave-one-MoA-out table: the seed's out-of-fold treatment predictions for the
    known MoAs, its leave-one-MoA-out folds' for the held-out one."""
    if run.novelty is None or not run.novelty.folds:
        return None
    known = next(s for s in seeds if s.seed == run.novelty.seed).levels["treatment"]
    crops = pd.concat([f.predictions for f in run.novelty.folds], ignore_index=True)
    return novelty_from_probabilities(known, aggregate_probabilities(crops, "treatment"),
                                      confidence=run.config.novelty_confidence,
                                      scheme=run.config.conformal_scheme)


def calibrate_seeds(seeds: list[SeedResult]) -> dict[str, CalibrationResult]:
    """Temperature-scaled treatment probabilities of every seed (fitted leave-one-compound-out),
    added to its treatment table as ``Calibrated_<MoA>`` columns."""
    out = {}
    for seed in seeds:
        table = seed.levels["treatment"]
        if table[sc.COMPOUND].nunique() < 2:  # nothing to fit on without the compound
            continue
        result = calibrate_loco(table)
        calibrated = [c for c in result.table.columns if c.startswith(CALIBRATED_PREFIX)]
        seed.levels["treatment"] = pd.concat(
            [table.reset_index(drop=True), result.table[calibrated]], axis=1)
        out[f"seed{seed.seed}"] = result
    return out


def calibration_summary(results: dict[str, CalibrationResult]) -> CalibrationSummary:
    """ECE before and after calibration, mean over seeds."""
    summaries = [r.summary() for r in results.values()]
    return CalibrationSummary(summaries[0]["method"], summaries[0]["bins"],
                              *(float(np.mean([s[k] for s in summaries]))
                                for k in ("ece_before", "ece_after", "temperature_median")))


def conformal_summary(results: dict[str, ConformalResult],
                      confidences: Sequence[float]) -> ConformalSummary:
    """Coverage and set size per confidence: mean over seeds, and of the ensemble where
    there is one."""
    per_seed = [r.summary()["levels"] for k, r in results.items() if k != "ensemble"]
    last = results.get("ensemble") or next(reversed(results.values()))
    last_levels = last.summary()["levels"]  # computed once: each call scores every set again
    levels = []
    for i, conf in enumerate(confidences):
        level = last_levels[i]
        ensemble = ({"ensemble_coverage": level["coverage"],
                     "ensemble_set_size": level["mean_set_size"]} if "ensemble" in results
                    else {})
        levels.append(ConformalLevel(
            conf, float(np.mean([s[i]["coverage"] for s in per_seed])),
            float(np.mean([s[i]["mean_set_size"] for s in per_seed])), **ensemble,
            **{k: level[k] for k in ("scheme", "too_few_calibration", "calibration_needed")}))
    return ConformalSummary(last.scheme, levels)


def sem(values: np.ndarray) -> float | None:
    """Standard error of the mean; None for a single value (the spread is undefined)."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
