"""Evaluating profiles: well profiles -> normalised treatment profiles -> 1-NN accuracy, mAP.

:func:`evaluate_profiles` returns an :class:`EvaluationResult`; writing its tables, JSON and
plots is :func:`cellmorph.reporting.writers.write_evaluation`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from copairs.matching import UnpairedException

from cellmorph import schema as sc
from cellmorph.config import EvaluateConfig
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.conformal import ConformalResult, calibration_note, conformal_from_profiles
from cellmorph.evaluation.knn import NNResult, nn_accuracy
from cellmorph.evaluation.map import moa_consistency, phenotypic_activity, summarize_map
from cellmorph.evaluation.novelty import format_novelty, leave_one_moa_out, summarize_novelty
from cellmorph.evaluation.predictions import confusion
from cellmorph.log import get_logger
from cellmorph.profiling.normalize import (
    check_missing,
    drop_unusable_features,
    normalize,
    reduce_pca,
    sphere,
)

log = get_logger(__name__)


@dataclass
class EvaluationResult:
    """Everything an evaluation of profiles found, as tables and numbers."""

    config: EvaluateConfig
    wells: pd.DataFrame  # normalised (and batch-corrected) well profiles
    treatments: pd.DataFrame  # treatment profiles of the labelled treatments
    nn: list[NNResult]
    notes: dict = field(default_factory=dict)
    map_activity: pd.DataFrame | None = None
    map_consistency: pd.DataFrame | None = None
    conformal: ConformalResult | None = None
    novelty: pd.DataFrame | None = None  # leave-one-MoA-out, one row per held-out MoA

    @property
    def n_wells(self) -> int:
        """Labelled treatment wells evaluated."""
        return int(sc.is_treatment(self.wells).sum())

    def confusion(self, holdout: str = "nsc", metric: str = "cosine") -> pd.DataFrame:
        """True vs predicted MoA of one 1-NN evaluation."""
        res = self.nn_result(holdout, metric)
        return confusion(res.predictions[sc.MOA], res.predictions["predicted"])

    def nn_result(self, holdout: str = "nsc", metric: str = "cosine") -> NNResult:
        """The 1-NN evaluation with this hold-out and distance."""
        for res in self.nn:
            if res.holdout == holdout and res.metric == metric:
                return res
        raise KeyError(f"no {holdout}/{metric} result (metrics evaluated: {self.config.metrics})")

    def nn_predictions(self) -> pd.DataFrame:
        """Every 1-NN prediction of every hold-out and distance, in one table."""
        return pd.concat([r.predictions.assign(metric=r.metric, holdout=r.holdout)
                          for r in self.nn], ignore_index=True)

    def metrics(self) -> dict:
        """The headline numbers (``metrics.json``)."""
        out: dict = {"n_wells": self.n_wells, "n_treatments": int(len(self.treatments)),
                     "n_compounds": int(self.treatments[sc.COMPOUND].nunique()),
                     "n_moas": int(self.treatments[sc.MOA].nunique()), **self.notes,
                     "nn": [r.as_dict() for r in self.nn]}
        if self.map_activity is not None and self.map_consistency is not None:
            out["map_activity"] = summarize_map(self.map_activity)
            consistency = summarize_map(self.map_consistency)
            consistency["per_moa"] = dict(zip(
                self.map_consistency[sc.MOA],
                self.map_consistency["mean_average_precision"].round(4), strict=True))
            out["map_moa_consistency"] = consistency
        if self.conformal is not None:
            out["conformal"] = self.conformal.summary()
        if self.novelty is not None:
            out["novelty"] = summarize_novelty(self.novelty)
        return out


def prepare_profiles(wells: pd.DataFrame, cfg: EvaluateConfig) -> tuple[pd.DataFrame, dict]:
    """Checked, normalised, batch-corrected well profiles; every fit uses controls only."""
    for col in (sc.ROLE, sc.MOA, sc.COMPOUND, sc.TREATMENT, sc.BATCH):
        if col not in wells.columns:
            raise CellmorphError(f"profile table lacks {col}; annotate it (see `cellmorph "
                                 "evaluate --help`)")
    feats = sc.feature_columns(wells)
    notes: dict = {}
    if sc.treatments(wells)[sc.MOA].nunique() < 2:
        raise CellmorphError("the profiles have fewer than two labelled MoAs; 1-NN MoA accuracy "
                             "and mAP need at least two (is the Metadata_Role column right?)")
    # A feature missing in every well is dropped, not every well with it.
    empty = [c for c in feats if wells[c].isna().all()]
    if empty:
        log.warning("%d feature(s) are missing in every well and are left out (first: %s)",
                    len(empty), empty[0])
        wells = wells.drop(columns=empty)
        notes["missing_features_dropped"] = len(empty)
    wells = check_missing(wells, cfg.drop_nan_rows)
    wells, dropped = drop_unusable_features(wells)
    if dropped:
        notes["constant_features_dropped"] = len(dropped)
    if not any(not str(c).startswith(sc.METADATA_PREFIX) for c in wells.columns):
        raise CellmorphError("every feature is constant or missing across the wells; there is "
                             "nothing to compare (check the profiles)")
    wells = normalize(wells, method=cfg.normalize, by=cfg.normalize_by)
    if cfg.sphering:
        wells = sphere(wells, epsilon=cfg.sphering_epsilon)
    if cfg.pca_components:
        wells = reduce_pca(wells, cfg.pca_components, seed=cfg.seed)
    return wells, notes


def evaluate_profiles(wells: pd.DataFrame, cfg: EvaluateConfig | None = None) -> EvaluationResult:
    """1-NN MoA accuracy (NSC and NSCB, every configured distance) and mAP of well profiles.

    Parameters
    ----------
    wells
        Well-level profiles: ``Metadata_`` columns (role, MoA, compound, treatment, batch
        among them) plus numeric features.
    cfg
        Normalisation, batch correction and metrics (default: :class:`EvaluateConfig`).

    Examples
    --------
    >>> from cellmorph.profiling.cellprofiler import read_profiles
    >>> result = evaluate_profiles(read_profiles("ljosa2013"), EvaluateConfig(map=False))
    >>> round(result.nn_result("nsc", "cosine").accuracy, 3)
    0.883
    """
    cfg = cfg or EvaluateConfig()
    wells, notes = prepare_profiles(wells, cfg)
    treatments = sc.aggregate(sc.treatments(wells), sc.TREATMENT_KEYS, cfg.aggregate)
    nn = []
    for metric in cfg.metrics:
        nn.append(nn_accuracy(treatments, metric=metric, holdout="nsc"))
        try:
            nn.append(nn_accuracy(treatments, metric=metric, holdout="nscb"))
        except CellmorphError as exc:  # one batch only: NSC still says something
            notes["nscb_not_evaluated"] = str(exc)
    if "nscb_not_evaluated" in notes:
        log.warning("NSCB not evaluated: %s", notes["nscb_not_evaluated"])
    result = EvaluationResult(cfg, wells, treatments, nn, notes)
    if cfg.map:
        try:
            result.map_activity = phenotypic_activity(wells, null_size=cfg.map_null_size,
                                                      threshold=cfg.map_threshold, seed=cfg.seed)
            result.map_consistency = moa_consistency(treatments, null_size=cfg.map_null_size,
                                                     threshold=cfg.map_threshold, seed=cfg.seed)
        except UnpairedException as exc:  # e.g. one well a treatment: no replicate to retrieve
            result.map_activity = result.map_consistency = None
            result.notes["map_not_evaluated"] = (f"{exc} (mAP needs replicate wells of a "
                                                 "treatment, and two treatments of a MoA)")
            log.warning("mAP not evaluated: %s", result.notes["map_not_evaluated"])
    if cfg.conformal:
        try:
            result.conformal = conformal_from_profiles(treatments, metric=cfg.metrics[0],
                                                       confidences=cfg.confidences,
                                                       scheme=cfg.conformal_scheme,
                                                       seed=cfg.seed)
        except CellmorphError as exc:
            result.notes["conformal_not_evaluated"] = str(exc)
    if cfg.novelty:
        try:
            result.novelty = leave_one_moa_out(treatments, metric=cfg.metrics[0],
                                               confidence=cfg.novelty_confidence,
                                               scheme=cfg.conformal_scheme, seed=cfg.seed)
        except CellmorphError as exc:
            result.notes["novelty_not_evaluated"] = str(exc)
    return result


def format_results(result: EvaluationResult) -> str:
    """A short table for the terminal."""
    m = result.metrics()
    lines = [f"{m['n_treatments']} treatments, {m['n_compounds']} compounds, "
             f"{m['n_moas']} MoAs ({m['n_wells']} wells)",
             f"{'hold-out':<9}{'metric':<11}{'1-NN acc':>9}{'n':>5}  dropped MoAs"]
    for r in m["nn"]:
        lines.append(f"{r['holdout'].upper():<9}{r['metric']:<11}{r['accuracy']:>9.1%}"
                     f"{r['n_treatments']:>5}  {', '.join(r['dropped_moas']) or '-'}")
    if "nscb_not_evaluated" in m:
        lines.append(f"NSCB not evaluated: {m['nscb_not_evaluated']}")
    for level in m.get("conformal", {}).get("levels", []):
        lines.append(f"conformal {level['confidence']:.0%} ({m['conformal']['method']}, "
                     f"{level['scheme']}): "
                     f"coverage {level['coverage']:.1%}, mean set size "
                     f"{level['mean_set_size']:.2f} MoAs{calibration_note(level)}")
    if "novelty" in m:
        lines.append(format_novelty(m["novelty"]))
    if "map_activity" in m:
        a, c = m["map_activity"], m["map_moa_consistency"]
        lines.append(f"mAP activity vs DMSO: {a['mean_map']:.3f} "
                     f"({a['fraction_retrieved']:.0%} of {a['n']} treatments retrieved)")
        lines.append(f"mAP MoA consistency: {c['mean_map']:.3f} "
                     f"({c['fraction_retrieved']:.0%} of {c['n']} MoAs retrieved)")
    return "\n".join(lines)
