"""``cellmorph evaluate``: well profiles -> normalised treatment profiles -> metrics and plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cellmorph.atomic import ensure_writable_dir, write_csv, write_json
from cellmorph.config import EvaluateConfig, save_config
from cellmorph.datasets import index as ix
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.knn import confusion, nn_accuracy
from cellmorph.evaluation.map import moa_consistency, phenotypic_activity, summarize_map
from cellmorph.profiling.aggregate import TREATMENT_KEYS, aggregate, feature_columns
from cellmorph.profiling.normalize import (
    check_missing,
    drop_unusable_features,
    normalize,
    reduce_pca,
    sphere,
)
from cellmorph.report.plots import plot_bars, plot_confusion


def prepare_profiles(wells: pd.DataFrame, cfg: EvaluateConfig) -> tuple[pd.DataFrame, dict]:
    """Checked, normalised, batch-corrected well profiles; every fit uses controls only."""
    for col in (ix.ROLE, ix.MOA, ix.COMPOUND, ix.TREATMENT, ix.BATCH):
        if col not in wells.columns:
            raise CellmorphError(f"profile table lacks {col}; annotate it (see `cellmorph "
                                 "evaluate --help`)")
    feature_columns(wells)
    notes: dict = {}
    wells = check_missing(wells, cfg.drop_nan_rows)
    wells, dropped = drop_unusable_features(wells)
    if dropped:
        notes["constant_features_dropped"] = len(dropped)
    wells = normalize(wells, method=cfg.normalize, by=cfg.normalize_by)
    if cfg.sphering:
        wells = sphere(wells, epsilon=cfg.sphering_epsilon)
    if cfg.pca_components:
        wells = reduce_pca(wells, cfg.pca_components, seed=cfg.seed)
    return wells, notes


def evaluate_profiles(wells: pd.DataFrame, cfg: EvaluateConfig,
                      out: Path | None = None) -> dict:
    """All metrics of a well-level profile table; writes JSON, tables and PNGs to ``out``."""
    wells, notes = prepare_profiles(wells, cfg)
    labelled = wells[wells[ix.ROLE] == ix.ROLE_TREATMENT]
    treatments = aggregate(labelled, TREATMENT_KEYS, cfg.aggregate)
    results: dict = {"n_wells": int(len(labelled)), "n_treatments": int(len(treatments)),
                     "n_compounds": int(treatments[ix.COMPOUND].nunique()),
                     "n_moas": int(treatments[ix.MOA].nunique()), **notes, "nn": []}
    if out is not None:
        out = ensure_writable_dir(out)
        save_config(cfg, out / "evaluate_config.yaml")
    tables = []
    for metric in cfg.metrics:
        for holdout in ("nsc", "nscb"):
            res = nn_accuracy(treatments, metric=metric, holdout=holdout)
            results["nn"].append(res.as_dict())
            tables.append(res.predictions.assign(metric=metric, holdout=holdout))
            if out is not None:
                cm = confusion(res.predictions[ix.MOA], res.predictions["predicted"])
                plot_confusion(cm, f"{holdout.upper()} 1-NN ({metric}): "
                               f"{res.accuracy:.1%} of {res.n_treatments} treatments",
                               out / f"confusion_{holdout}_{metric}.png")
    if cfg.map:
        activity = phenotypic_activity(wells, null_size=cfg.map_null_size,
                                       threshold=cfg.map_threshold, seed=cfg.seed)
        consistency = moa_consistency(treatments, null_size=cfg.map_null_size,
                                      threshold=cfg.map_threshold, seed=cfg.seed)
        results["map_activity"] = summarize_map(activity)
        results["map_moa_consistency"] = summarize_map(consistency)
        results["map_moa_consistency"]["per_moa"] = dict(zip(
            consistency[ix.MOA], consistency["mean_average_precision"].round(4), strict=True))
        if out is not None:
            write_csv(activity, out / "map_activity.csv")
            write_csv(consistency, out / "map_moa_consistency.csv")
            plot_bars(dict(zip(consistency[ix.MOA], consistency["mean_average_precision"],
                               strict=True)), "MoA consistency mAP (copairs)", "mAP",
                      out / "map_moa_consistency.png")
    if out is not None:
        write_csv(pd.concat(tables, ignore_index=True), out / "nn_predictions.csv")
        write_json(results, out / "metrics.json")
    return results


def format_results(results: dict) -> str:
    """A short table for the terminal."""
    lines = [f"{results['n_treatments']} treatments, {results['n_compounds']} compounds, "
             f"{results['n_moas']} MoAs ({results['n_wells']} wells)",
             f"{'hold-out':<9}{'metric':<11}{'1-NN acc':>9}{'n':>5}  dropped MoAs"]
    for r in results["nn"]:
        lines.append(f"{r['holdout'].upper():<9}{r['metric']:<11}{r['accuracy']:>9.1%}"
                     f"{r['n_treatments']:>5}  {', '.join(r['dropped_moas']) or '-'}")
    if "map_activity" in results:
        a, c = results["map_activity"], results["map_moa_consistency"]
        lines.append(f"mAP activity vs DMSO: {a['mean_map']:.3f} "
                     f"({a['fraction_retrieved']:.0%} of {a['n']} treatments retrieved)")
        lines.append(f"mAP MoA consistency: {c['mean_map']:.3f} "
                     f"({c['fraction_retrieved']:.0%} of {c['n']} MoAs retrieved)")
    return "\n".join(lines)
