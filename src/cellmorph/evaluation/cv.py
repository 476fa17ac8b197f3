"""Scoring a cross-validated training run: accuracy per level and per epoch, over seeds."""

from __future__ import annotations

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
from cellmorph.evaluation.conformal import (
    ConformalResult,
    calibration_note,
    conformal_from_probabilities,
)
from cellmorph.evaluation.ensemble import EnsembleResult, ensemble_seeds
from cellmorph.evaluation.novelty import (
    format_novelty,
    novelty_from_probabilities,
    summarize_novelty,
)
from cellmorph.evaluation.predictions import aggregate_probabilities, confusion
from cellmorph.training.cv import SeedRun, TrainingRun


@dataclass
class SeedResult:
    """The scored predictions of one replicate seed."""

    seed: int
    crops: pd.DataFrame
    levels: dict[str, pd.DataFrame]  # image / well / treatment predictions
    metrics: dict
    folds: list[str] = field(default_factory=list)

    @property
    def per_epoch_accuracy(self) -> list[float]:
        """Accuracy at the report level after each epoch."""
        return self.metrics["per_epoch_accuracy"]


@dataclass
class CVResult:
    """A scored cross-validation run: every seed, and mean ± SEM over seeds."""

    config: TrainConfig
    classes: list[str]
    seeds: list[SeedResult]
    summary: dict
    folds_total: int
    runtime: dict = field(default_factory=dict)
    ensemble: EnsembleResult | None = None  # the seeds combined (treatment level)
    conformal: dict[str, ConformalResult] = field(default_factory=dict)  # seed<S>, ensemble
    calibration: dict[str, CalibrationResult] = field(default_factory=dict)  # seed<S>
    conformal_well: dict[str, ConformalResult] = field(default_factory=dict)  # seed<S>
    novelty: pd.DataFrame | None = None  # leave-one-MoA-out, one row per held-out MoA

    @property
    def folds_done(self) -> int:
        """Folds predicted (per seed); fewer than ``folds_total`` when only some were run."""
        return len(self.seeds[0].folds) if self.seeds else 0

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
    return SeedResult(seed.seed, crops, levels, metrics, [f.name for f in seed.folds])


def summarise_cv(run: TrainingRun) -> CVResult:
    """Score every seed of a run and summarise over seeds (mean ± SEM; the SEM of a single
    seed is undefined and given as None)."""
    cfg = run.config
    seeds = [score_seed(s, cfg.report_level) for s in run.seeds]
    summary: dict = {"model": cfg.model, "weights": cfg.weights, "seeds": cfg.seeds,
                     "report_level": cfg.report_level, "n_seeds": len(seeds),
                     "folds_done": len(seeds[0].folds), "folds_total": run.folds_total,
                     "trained": run.trained}
    for key in ("crop_accuracy", "image_accuracy", "well_accuracy", "treatment_accuracy"):
        vals = np.array([s.metrics[key] for s in seeds])
        summary[key] = {"mean": float(vals.mean()), "sem": sem(vals), "values": vals.tolist()}
    curves = np.array([s.per_epoch_accuracy for s in seeds])
    summary["per_epoch_accuracy"] = {"mean": curves.mean(0).tolist(),
                                     "sem": [sem(c) for c in curves.T]}
    summary["n_treatments"] = seeds[0].metrics["n_treatments"]
    ensemble = ensemble_seeds([s.levels["treatment"] for s in seeds], [s.seed for s in seeds])
    summary["ensemble"] = ensemble.summary()
    conformal, conformal_well = conformal_seeds(seeds, ensemble, cfg)
    if conformal:
        summary["conformal"] = conformal_summary(conformal, cfg.confidences)
    if conformal_well:
        summary["conformal_well"] = conformal_summary(conformal_well, cfg.confidences)
    calibration = calibrate_seeds(seeds)
    if calibration:
        summary["calibration"] = calibration_summary(calibration)
    try:
        novelty = score_novelty(run, seeds)
    except CellmorphError as exc:  # e.g. a partial run: too few known compounds to calibrate
        novelty, summary["novelty_not_evaluated"] = None, str(exc)
    if novelty is not None:
        summary["novelty"] = summarize_novelty(novelty)
    return CVResult(cfg, run.classes, seeds, summary, run.folds_total, run.runtime, ensemble,
                    conformal, calibration, conformal_well, novelty)


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


def calibration_summary(results: dict[str, CalibrationResult]) -> dict:
    """ECE before and after calibration, mean over seeds."""
    summaries = [r.summary() for r in results.values()]
    return {"method": summaries[0]["method"], "bins": summaries[0]["bins"],
            **{k: float(np.mean([s[k] for s in summaries]))
               for k in ("ece_before", "ece_after", "temperature_median")}}


def conformal_summary(results: dict[str, ConformalResult], confidences) -> dict:
    """Coverage and set size per confidence: mean over seeds, and of the ensemble where
    there is one."""
    per_seed = [r.summary()["levels"] for k, r in results.items() if k != "ensemble"]
    last = results.get("ensemble") or next(reversed(results.values()))
    out: dict = {"scheme": last.scheme, "levels": []}
    for i, conf in enumerate(confidences):
        level = last.summary()["levels"][i]
        ensemble = ({"ensemble_coverage": level["coverage"],
                     "ensemble_set_size": level["mean_set_size"]} if "ensemble" in results
                    else {})
        out["levels"].append({
            "confidence": conf,
            "coverage_mean_over_seeds": float(np.mean([s[i]["coverage"] for s in per_seed])),
            "set_size_mean_over_seeds": float(np.mean([s[i]["mean_set_size"] for s in per_seed])),
            **ensemble,
            **{k: level[k] for k in ("scheme", "too_few_calibration", "calibration_needed")}})
    return out


def sem(values: np.ndarray) -> float | None:
    """Standard error of the mean; None for a single value (the spread is undefined)."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


def partial_note(summary: dict) -> str:
    """``" (2 of 13 folds)"`` when only some folds were run, else empty."""
    done, total = summary.get("folds_done"), summary.get("folds_total")
    return f" ({done} of {total} folds)" if done is not None and done != total else ""


def format_accuracy(value: dict) -> str:
    """``87.0 % ± 1.2 %`` over seeds, or ``87.0 %`` for one seed."""
    if value.get("sem") is None:
        return f"{value['mean']:.1%}"
    return f"{value['mean']:.1%} ± {value['sem']:.1%}"


def format_cv(result: CVResult | dict) -> str:
    """Accuracies as mean ± SEM over seeds, for the terminal."""
    summary = result.summary if isinstance(result, CVResult) else result
    lines = [f"{summary['model']} ({summary['weights']}), {summary['n_seeds']} seed(s)"
             f"{partial_note(summary)}:"]
    for key in ("treatment_accuracy", "well_accuracy", "image_accuracy", "crop_accuracy"):
        lines.append(f"  {key.replace('_', ' '):<20}{format_accuracy(summary[key])}")
    if summary.get("n_seeds", 1) > 1 and "ensemble" in summary:
        e = summary["ensemble"]
        lines.append(f"  ensemble of the seeds: {e['ensemble_accuracy']:.1%} "
                     f"({e['n_disagreements']} of {e['n']} treatments where seeds disagree)")
    for key, unit in (("conformal", ""), ("conformal_well", " per well")):
        for level in summary.get(key, {}).get("levels", []):
            lines.append(f"  conformal {level['confidence']:.0%}{unit} ({level['scheme']}): "
                         f"coverage {level['coverage_mean_over_seeds']:.1%}, mean set size "
                         f"{level['set_size_mean_over_seeds']:.2f} MoAs"
                         f"{calibration_note(level)}")
    if "calibration" in summary:
        c = summary["calibration"]
        lines.append(f"  calibration: ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f} "
                     f"({c['method']}; median T {c['temperature_median']:.2f})")
    if "novelty" in summary:
        lines.append(f"  {format_novelty(summary['novelty'])}")
    if summary.get("trained"):
        lines.append(f"  trained: {summary['trained']}")
    return "\n".join(lines)
