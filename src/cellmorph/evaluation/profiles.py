"""Evaluating profiles: well profiles -> normalised treatment profiles -> 1-NN accuracy, mAP.

:func:`evaluate_profiles` returns an :class:`EvaluationResult`; writing its tables, JSON and
plots is :func:`cellmorph.reporting.writers.write_evaluation`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from copairs.matching import UnpairedException

from cellmorph import schema as sc
from cellmorph.config import EvaluateConfig
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.conformal import ConformalResult, conformal_from_profiles
from cellmorph.evaluation.knn import NNResult, nn_accuracy
from cellmorph.evaluation.map import moa_consistency, phenotypic_activity, summarize_map
from cellmorph.evaluation.normalize import (
    check_missing,
    drop_unusable_features,
    normalize,
    reduce_pca,
    sphere,
)
from cellmorph.evaluation.novelty import leave_one_moa_out, summarize_novelty
from cellmorph.evaluation.predictions import confusion
from cellmorph.log import get_logger
from cellmorph.records import ShortRepr, as_dict

log = get_logger(__name__)


@dataclass(repr=False)
class EvaluationResult(ShortRepr):
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

    def summary_table(self) -> pd.DataFrame:
        """1-NN accuracy of each hold-out and distance (what a notebook shows)."""
        return pd.DataFrame([{"hold-out": r.holdout.upper(), "metric": r.metric,
                              "accuracy": round(r.accuracy, 4), "treatments": r.n_treatments}
                             for r in self.nn])

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
            out["novelty"] = as_dict(summarize_novelty(self.novelty))
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


def compare_evaluations(results: Mapping[str, EvaluationResult],
                        metric: str = "cosine") -> pd.DataFrame:
    """One row per evaluated set of profiles: NSC and NSCB 1-NN accuracy (``metric``), the
    MoA-consistency mAP when it was computed, and the treatments scored: the
    profile-to-profile comparison in one table.

    >>> from cellmorph.profiling.cellprofiler import read_profiles
    >>> result = evaluate_profiles(read_profiles("ljosa2013"),
    ...                            EvaluateConfig(map=False, conformal=False, novelty=False))
    >>> compare_evaluations({"CellProfiler": result}).round(3).to_dict("records")
    [{'profiles': 'CellProfiler', 'nsc': 0.883, 'nscb': 0.707, 'map': nan, 'treatments': 103}]
    """
    rows = []
    for name, result in results.items():
        metrics = result.metrics()
        rows.append({"profiles": name,
                     "nsc": result.nn_result("nsc", metric).accuracy,
                     "nscb": result.nn_result("nscb", metric).accuracy,
                     "map": metrics.get("map_moa_consistency", {}).get("mean_map", np.nan),
                     "treatments": len(result.treatments)})
    return pd.DataFrame(rows)

