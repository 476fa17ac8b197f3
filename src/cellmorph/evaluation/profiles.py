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
from cellmorph.evaluation.activity import (
    DISTANCE_TO_CONTROLS,
    distance_to_controls,
    dose_comparison,
)
from cellmorph.evaluation.calls import (
    TOO_FEW,
    Calls,
    ScreenCalls,
    calibration_references,
    call_unknowns,
    with_truth,
)
from cellmorph.evaluation.conformal import ConformalResult, conformal_from_profiles
from cellmorph.evaluation.knn import NNResult, nn_accuracy
from cellmorph.evaluation.map import moa_consistency, phenotypic_activity, summarize_map
from cellmorph.evaluation.needs import NEEDS
from cellmorph.evaluation.normalize import (
    check_missing,
    drop_unusable_features,
    normalize,
    reduce_pca,
    sphere,
)
from cellmorph.evaluation.novelty import leave_one_moa_out, summarize_novelty
from cellmorph.evaluation.plates import PlateViews, plate_views
from cellmorph.evaluation.potency import potency, potency_summary
from cellmorph.evaluation.predictions import confusion
from cellmorph.evaluation.replicates import ReplicateResult, percent_replicating
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
    activity: pd.DataFrame | None = None  # each treated well's distance to the controls
    dose: pd.DataFrame | None = None  # each compound's doses against its lowest
    potency: pd.DataFrame | None = None  # each compound's dose-response fit and EC50
    plates: PlateViews | None = None  # every well's activity, edge effects, Z'
    replicates: ReplicateResult | None = None  # percent replicating (JUMP)
    skipped: dict[str, str] = field(default_factory=dict)  # part -> why it was not computed
    calls: Calls | None = None  # the unlabelled treatments' calls (evaluation.calls)

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
        if not self.nn:
            return pd.DataFrame(columns=[sc.TREATMENT, sc.MOA, "predicted", "metric", "holdout"])
        return pd.concat([r.predictions.assign(metric=r.metric, holdout=r.holdout)
                          for r in self.nn], ignore_index=True)

    def metrics(self) -> dict:
        """The headline numbers (``metrics.json``)."""
        out: dict = {"n_wells": self.n_wells, "n_treatments": int(len(self.treatments)),
                     "n_compounds": int(self.treatments[sc.COMPOUND].nunique()),
                     "n_moas": int(self.treatments[sc.MOA].nunique()), **self.notes,
                     "nn": [r.as_dict() for r in self.nn]}
        if self.map_activity is not None:
            out["map_activity"] = summarize_map(self.map_activity)
        if self.map_consistency is not None:
            consistency = summarize_map(self.map_consistency)
            consistency["per_moa"] = dict(zip(
                self.map_consistency[sc.MOA],
                self.map_consistency["mean_average_precision"].round(4), strict=True))
            out["map_moa_consistency"] = consistency
        if self.conformal is not None:
            out["conformal"] = self.conformal.summary()
        if self.novelty is not None:
            out["novelty"] = as_dict(summarize_novelty(self.novelty))
        if self.activity is not None and len(self.activity):
            out["distance_to_controls"] = {
                "median": float(self.activity[DISTANCE_TO_CONTROLS].median()),
                "n_wells": int(len(self.activity))}
        if self.dose is not None and len(self.dose):
            out["dose_series"] = int(self.dose[sc.COMPOUND].nunique())
        if self.potency is not None and len(self.potency):
            out["potency"] = potency_summary(self.potency)
        if self.plates is not None:
            out["plates"] = self.plates.summary()
        if self.replicates is not None:
            out["percent_replicating"] = {
                "percent": self.replicates.percent, "threshold": self.replicates.threshold,
                "n_treatments": int(len(self.replicates.table)),
                "null_group_size": self.replicates.n_replicates}
        if self.calls is not None:
            out["calls"] = as_dict(self.calls.summary())
        out["skipped"] = dict(self.skipped)
        return out


def prepare_profiles(wells: pd.DataFrame, cfg: EvaluateConfig
                     ) -> tuple[pd.DataFrame, dict, dict[str, str]]:
    """Checked, normalised, batch-corrected well profiles (every fit uses controls only),
    the notes, and the steps skipped for want of controls, each with why."""
    for col in (sc.ROLE, sc.MOA, sc.COMPOUND, sc.TREATMENT, sc.BATCH):
        if col not in wells.columns:
            raise CellmorphError(f"profile table lacks {col}; annotate it (see `cellmorph "
                                 "evaluate --help`)")
    feats = sc.feature_columns(wells)
    notes: dict = {}
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
    skipped: dict[str, str] = {}
    n_controls = int(sc.is_control(wells).sum())
    if cfg.normalize != "none" and n_controls < 2:
        skipped["normalisation"] = (f"{_wells(n_controls, 'control')}; it needs "
                                    f"{NEEDS['normalisation']} (profiles compared as they are)")
    elif cfg.normalize != "none":
        wells = normalize(wells, method=cfg.normalize, by=cfg.normalize_by)
    if cfg.sphering and n_controls < 3:
        skipped["sphering"] = f"{_wells(n_controls, 'control')}; it needs {NEEDS['sphering']}"
    elif cfg.sphering:
        wells = sphere(wells, epsilon=cfg.sphering_epsilon)
    if cfg.pca_components and n_controls <= cfg.pca_components:
        skipped["pca"] = f"{_wells(n_controls, 'control')}; it needs {NEEDS['pca']}"
    elif cfg.pca_components:
        wells = reduce_pca(wells, cfg.pca_components, seed=cfg.seed)
    return wells, notes, skipped


def _wells(n: int, kind: str) -> str:
    return f"{n} {kind} well{'' if n == 1 else 's'}"


def evaluate_profiles(wells: pd.DataFrame, cfg: EvaluateConfig | None = None) -> EvaluationResult:
    """1-NN MoA accuracy (NSC and NSCB, every configured distance), mAP, conformal sets and
    novelty of well profiles, where the screen allows them; each well's distance to the
    controls and each compound's dose series, wherever there are controls or doses. What
    the data do not allow is skipped and listed in ``skipped`` with why (:data:`NEEDS`).

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
    wells, notes, skipped = prepare_profiles(wells, cfg)
    labelled = sc.treatments(wells)
    treatments = (sc.aggregate(labelled, sc.TREATMENT_KEYS, cfg.aggregate) if len(labelled)
                  else labelled)  # none: the table keeps its columns
    result = EvaluationResult(cfg, wells, treatments, [], notes, skipped=skipped)
    result.activity = distance_to_controls(wells)
    if result.activity.empty:
        skipped["distance_to_controls"] = f"no control well; it needs {NEEDS['distance_to_controls']}"
    result.dose = dose_comparison(wells, metric=cfg.metrics[0])
    if result.dose.empty:
        skipped["dose"] = f"no dose series; it needs {NEEDS['dose']}"
    if not result.activity.empty:
        _plate_views(result)
    result.replicates = percent_replicating(wells, seed=cfg.seed)
    if result.replicates is None:
        skipped["percent_replicating"] = ("no treatment with two wells; it needs "
                                          f"{NEEDS['percent_replicating']}")
    if cfg.potency:
        result.potency = potency(result.activity, DISTANCE_TO_CONTROLS,
                                 n_boot=cfg.potency_bootstrap, seed=cfg.seed)
        if result.potency.empty:
            skipped["potency"] = f"no dose series to fit; it needs {NEEDS['potency']}"
    if cfg.map:
        _map_activity(result)
    if treatments.empty:
        unknowns = ("calls",) if (wells[sc.ROLE] == sc.ROLE_UNLABELLED).any() else ()
        for part in ("nsc", "nscb", "map_consistency", "conformal", "novelty", *unknowns):
            result.skipped[part] = (f"no labelled treatment (a label column in the plate map "
                                    f"gives MoAs); it needs {NEEDS[part]}")
        return _warn_skipped(result)
    _nearest_neighbours(result)
    if cfg.map:
        _map_consistency(result)
    _call_unknowns(result)
    _attempt(result, "conformal", cfg.conformal, lambda: conformal_from_profiles(
        treatments, metric=cfg.metrics[0], confidences=cfg.confidences,
        scheme=cfg.conformal_scheme, seed=cfg.seed))
    _attempt(result, "novelty", cfg.novelty, lambda: leave_one_moa_out(
        treatments, metric=cfg.metrics[0], confidence=cfg.novelty_confidence,
        scheme=cfg.conformal_scheme, seed=cfg.seed))
    return _warn_skipped(result)


def _plate_views(result: EvaluationResult) -> None:
    """Plate views where the wells' names are plate positions; a positive control the
    screen lacks is the user's error and stops the evaluation."""
    cfg, wells = result.config, result.wells
    positions = wells[sc.WELL].astype(str).str.fullmatch(r"[A-Za-z]{1,2}0*\d{1,2}")
    if not positions.all():
        bad = wells.loc[~positions, sc.WELL].iloc[0]
        result.skipped["plates"] = (f"well {bad!r} is not a plate position (a row letter "
                                    f"and a column number); it needs {NEEDS['plates']}")
        if cfg.positive_controls:
            raise CellmorphError(f"positive_controls: Z' is computed on the plate views, "
                                 f"and well {bad!r} is not a plate position")
        return
    result.plates = plate_views(wells, cfg.positive_controls)


def _call_unknowns(result: EvaluationResult) -> None:
    """Calls for the unlabelled treatments, calibrated on the labelled ones."""
    cfg, wells = result.config, result.wells
    unlabelled = wells[wells[sc.ROLE] == sc.ROLE_UNLABELLED]
    if unlabelled.empty:
        return
    if calibration_references(result.treatments)[sc.MOA].nunique() < 2:
        result.skipped["calls"] = f"{TOO_FEW} ({NEEDS['calls']})"
        return
    unknown = sc.aggregate(unlabelled, sc.TREATMENT_KEYS, cfg.aggregate)
    result.calls = call_unknowns(result.treatments, unknown, metric=cfg.metrics[0],
                                 confidences=cfg.confidences, scheme=cfg.conformal_scheme,
                                 novelty_confidence=cfg.novelty_confidence, seed=cfg.seed)


def _warn_skipped(result: EvaluationResult) -> EvaluationResult:
    # Said once, at the level of detail a reader wants: the parts a user asked for by name
    # (normalisation, sphering, PCA) as warnings; the rest is in `skipped` and the summary.
    for what in ("normalisation", "sphering", "pca"):
        if what in result.skipped:
            log.warning("%s skipped: %s", what, result.skipped[what])
    return result


def _nearest_neighbours(result: EvaluationResult) -> None:
    """NSC and NSCB 1-NN accuracy for every distance, where the labels allow them."""
    for holdout in ("nsc", "nscb"):
        try:
            result.nn += [nn_accuracy(result.treatments, metric=metric, holdout=holdout)
                          for metric in result.config.metrics]
        except CellmorphError as exc:  # too few MoAs, compounds or batches
            result.skipped[holdout] = f"{exc} ({NEEDS[holdout]})"


def _map_options(cfg: EvaluateConfig) -> dict:
    return dict(null_size=cfg.map_null_size, threshold=cfg.map_threshold, seed=cfg.seed)


def _map_activity(result: EvaluationResult) -> None:
    """Phenotypic activity against the controls (by treatment, else by compound)."""
    if not sc.is_control(result.wells).any():
        result.skipped["map_activity"] = f"no control well; it needs {NEEDS['map_activity']}"
    else:
        result.map_activity = _activity_map(result, _map_options(result.config))


def _map_consistency(result: EvaluationResult) -> None:
    """MoA consistency: same-MoA treatments of other compounds retrieved first."""
    options = _map_options(result.config)
    if result.treatments[sc.MOA].nunique() < 2:
        result.skipped["map_consistency"] = (f"{result.treatments[sc.MOA].nunique()} labelled "
                                             f"MoA(s); it needs {NEEDS['map_consistency']}")
        return
    try:
        result.map_consistency = moa_consistency(result.treatments, **options)
    except (UnpairedException, ValueError) as exc:
        result.skipped["map_consistency"] = f"{exc} ({NEEDS['map_consistency']})"


def _activity_map(result: EvaluationResult, options: dict) -> pd.DataFrame | None:
    """Activity mAP by treatment; by compound where no treatment has two wells (a dose
    series of single wells: its doses are each other's replicates)."""
    for by in (sc.TREATMENT, sc.COMPOUND):
        try:
            scores = phenotypic_activity(result.wells, by=by, **options)
        except (UnpairedException, ValueError):
            continue
        if len(scores):
            if by == sc.COMPOUND:
                result.notes["map_activity_by"] = ("compound: no treatment has two wells, so "
                                                   "a compound's doses are its replicates")
            return scores
    result.skipped["map_activity"] = f"no replicate wells; it needs {NEEDS['map_activity']}"
    return None


def _attempt(result: EvaluationResult, name: str, wanted: bool, compute) -> None:
    """Set ``result.<name>`` to ``compute()``, or say in ``skipped`` why it cannot be."""
    if not wanted:
        return
    try:
        setattr(result, name, compute())
    except CellmorphError as exc:
        result.skipped[name] = f"{exc} ({NEEDS[name]})"


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
        accuracy = {r.holdout: r.accuracy for r in result.nn if r.metric == metric}
        rows.append({"profiles": name,
                     "nsc": accuracy.get("nsc", np.nan),  # NaN: skipped (result.skipped)
                     "nscb": accuracy.get("nscb", np.nan),
                     "map": metrics.get("map_moa_consistency", {}).get("mean_map", np.nan),
                     "treatments": len(result.treatments)})
    return pd.DataFrame(rows)


REFERENCE, SCREEN = "reference", "screen"  # the two screens `call_screen` puts side by side


def call_screen(reference: pd.DataFrame, screen: pd.DataFrame,
                cfg: EvaluateConfig | None = None) -> ScreenCalls:
    """Calls for every treated compound of another screen, from the labelled treatments of a
    reference screen (well profiles of the same network and preprocessing).

    The two screens' wells are prepared as one table, each plate normalised on its own
    controls (sphering and PCA, where asked for, fitted on both screens' controls: no label
    is used). Every treated well of ``screen`` is a query; a label it carries is kept only
    to check the call (``truth_accuracy``). A query whose compound is also a reference is
    called from the other compounds, as NSC scores a labelled one.
    """
    cfg = cfg or EvaluateConfig()
    union = pd.concat([_tagged(reference, REFERENCE), _tagged(screen, SCREEN)],
                      ignore_index=True)
    wells, notes, skipped = prepare_profiles(union, cfg)
    in_screen = wells[sc.PLATE].str.startswith(f"{SCREEN}/")
    for column in (sc.PLATE, sc.BATCH):  # the screens' own names again
        if column in wells.columns:
            wells[column] = wells[column].str.split("/", n=1).str[1]
    references = sc.aggregate(sc.treatments(wells[~in_screen]), sc.TREATMENT_KEYS,
                              cfg.aggregate)
    if calibration_references(references)[sc.MOA].nunique() < 2:
        raise CellmorphError(f"the reference run: {TOO_FEW}")
    queries = sc.aggregate(wells[in_screen & ~sc.is_control(wells)], sc.TREATMENT_KEYS,
                           cfg.aggregate)
    if queries.empty:
        raise CellmorphError("the screen has no treated well to call (only controls)")
    calls = call_unknowns(references, queries.drop(columns=[sc.MOA]), metric=cfg.metrics[0],
                          confidences=cfg.confidences, scheme=cfg.conformal_scheme,
                          novelty_confidence=cfg.novelty_confidence, seed=cfg.seed,
                          labelled_compounds="other")
    return with_truth(calls, queries, notes, skipped)


def _tagged(wells: pd.DataFrame, screen: str) -> pd.DataFrame:
    """The wells with their plates (and batches) named after their screen, so that each
    plate is normalised on its own controls even where two screens share plate names."""
    out = wells.copy()
    out[sc.PLATE] = f"{screen}/" + out[sc.PLATE].astype(str)
    if sc.BATCH in out.columns:
        out[sc.BATCH] = f"{screen}/" + out[sc.BATCH].astype(str)
    return out
