"""Results in words: the lines the terminal prints (and the report reuses).

Every stage returns numbers; how they read is decided here, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from cellmorph import schema as sc
from cellmorph.evaluation.calls import (
    CALL,
    CALL_DISTANCE,
    CALL_PROBABILITY,
    CALLS_FILE,
    NOT_CALLED,
    NOVEL,
    Calls,
    ScreenCalls,
)
from cellmorph.evaluation.novelty import NoveltySummary, summarize_novelty
from cellmorph.evaluation.profiles import EvaluationResult, compare_evaluations

# Result types only as annotations: their modules load torch, which a command that runs no
# network (evaluate, export) never needs (tests/test_cli.py checks it).
if TYPE_CHECKING:
    from cellmorph.evaluation.cv_scores import Accuracy, CVResult, CVSummary
    from cellmorph.evaluation.readout import TranslocationResult
    from cellmorph.training.weak import WeakTrainingResult


def calibration_note(too_few: list[str], needed: int) -> str:
    """Words beside a coverage figure whose confidence some classes cannot support: the MoAs
    with fewer than ``needed`` calibration treatments."""
    if not too_few:
        return ""
    return (f" (too few calibration treatments, under {needed}, to rule out {len(too_few)} "
            f"MoA(s) but by chance: {', '.join(too_few[:3])}{', ...' if len(too_few) > 3 else ''})")


def format_novelty(summary: NoveltySummary) -> str:
    """One line: how well unseen mechanisms stand out."""
    line = (f"novelty (leave-one-MoA-out, {summary.confidence:.0%} sets): AUROC "
            f"{summary.mean_auroc:.3f} ({summary.min_auroc:.2f}-{summary.max_auroc:.2f} "
            f"over held-out MoAs); empty set for {summary.detection_rate:.0%} of unseen "
            f"treatments, {summary.false_alarm_rate:.1%} of known ones")
    if summary.none_of_these_rate is None:  # a table written before the calls' rule
        return line
    return (f"{line}; 'none of these' as calls say it (empty or atypical) for "
            f"{summary.none_of_these_rate:.0%} of unseen, "
            f"{summary.none_of_these_false_alarm_rate:.1%} of known")


def format_index_summary(summary: dict) -> str:
    """An index's summary (:func:`cellmorph.datasets.index.summarize`) in a few lines."""
    return (
        f"labelled: {summary['images']} images, {summary['wells']} wells, "
        f"{plural(summary['treatments'], 'treatment')}, "
        f"{plural(summary['compounds'], 'compound')}, "
        f"{plural(summary['moas'], 'MoA')} on {plural(summary['plates'], 'plate')} in "
        f"{plural(summary['batches'], 'batch')}\n"
        f"controls: {summary['control_images']} images in {summary['control_wells']} wells; "
        f"unlabelled: {summary['unlabelled_images']} images\n"
        f"channels: {', '.join(summary['channels'])}"
    )


def format_evaluation(result: EvaluationResult) -> str:
    """An evaluation's numbers as a short table."""
    m = result.metrics()
    lines = [f"{plural(m['n_treatments'], 'treatment')}, "
             f"{plural(m['n_compounds'], 'compound')}, {plural(m['n_moas'], 'MoA')} "
             f"({plural(m['n_wells'], 'well')})"]
    if m["nn"]:
        lines.append(f"{'hold-out':<9}{'metric':<11}{'1-NN acc':>9}{'n':>5}  dropped MoAs")
    for r in m["nn"]:
        lines.append(f"{r['holdout'].upper():<9}{r['metric']:<11}{r['accuracy']:>9.1%}"
                     f"{r['n_treatments']:>5}  {', '.join(r['dropped_moas']) or '-'}")
    for level in m.get("conformal", {}).get("levels", []):
        lines.append(f"conformal {level['confidence']:.0%} ({m['conformal']['method']}, "
                     f"{level['scheme']}): "
                     f"coverage {level['coverage']:.1%}, mean set size "
                     f"{level['mean_set_size']:.2f} MoAs"
                     f"{calibration_note(level['too_few_calibration'], level['calibration_needed'])}")
    if result.novelty is not None:
        lines.append(format_novelty(summarize_novelty(result.novelty)))
    if "map_activity" in m:
        a, by = m["map_activity"], "compounds" if "map_activity_by" in m else "treatments"
        lines.append(f"mAP activity vs controls: {a['mean_map']:.3f} "
                     f"({a['fraction_retrieved']:.0%} of {a['n']} {by} retrieved)")
    if "map_moa_consistency" in m:
        c = m["map_moa_consistency"]
        lines.append(f"mAP MoA consistency: {c['mean_map']:.3f} "
                     f"({c['fraction_retrieved']:.0%} of {c['n']} MoAs retrieved)")
    if "distance_to_controls" in m:
        d = m["distance_to_controls"]
        lines.append(f"distance to controls (RMS per feature): median {d['median']:.3f} "
                     f"over {plural(d['n_wells'], 'treated well')}")
    lines += format_doses(result.dose)
    lines += format_potency(result.potency, "distance to the controls")
    if result.plates is not None:
        edges = result.plates.edges
        flagged = edges.loc[edges["p_value"] < 0.05, sc.PLATE].astype(str).tolist()
        lines.append(f"edge effect (edge against inner wells' distance to DMSO, p < 0.05): "
                     f"{len(flagged)} of {plural(len(edges), 'plate')}"
                     + (f" ({', '.join(flagged[:5])}{' ...' if len(flagged) > 5 else ''})"
                        if flagged else ""))
        if result.plates.z_prime is not None:
            overall = result.plates.z_prime.set_index(sc.PLATE).loc["all"]
            lines.append(f"Z' of the positive controls against DMSO: {overall['z_prime']:.2f}"
                         f" ({int(overall['n_positive'])} and {int(overall['n_negative'])} "
                         "wells)")
    if result.replicates is not None:
        rep = result.replicates
        lines.append(f"percent replicating {rep.percent:.1%} of {len(rep.table)} treatments "
                     f"(median replicate correlation above {rep.threshold:.3f}, the 95th "
                     f"percentile of {len(rep.null)} random groups of {rep.n_replicates} "
                     "wells of different treatments)")
    lines += format_calls(result.calls)
    lines += [f"skipped {what}: {why}" for what, why in m["skipped"].items()]
    return "\n".join(lines)


def format_calls(calls: Calls | None, shown: int = 20) -> list[str]:
    """The calls of the unlabelled treatments: what backs them (the run's accuracy and
    coverage on its labelled treatments), then a line each: call, 90 % set or "none of
    these" (the first ``shown``)."""
    if calls is None:
        return []
    lines = ([f"not called: {plural(len(calls.not_called), 'unlabelled dose')} of labelled "
              f"compounds ({', '.join(calls.not_called[:3])}"
              f"{', ...' if len(calls.not_called) > 3 else ''}): {NOT_CALLED}"]
             if calls.not_called else [])
    if calls.table.empty:
        return lines
    table = calls.table
    widest, confidence = calls.shown_sets, calls.shown_confidence
    backing = (f"on the labelled treatments, scored alike: top-1 {calls.labelled_accuracy:.0%}"
               f", {confidence:.0%} sets cover {calls.labelled_coverage[confidence]:.0%}")
    lines += [f"calls for {plural(len(table), 'unlabelled treatment')} ({calls.route}; "
              f"{backing}; {CALLS_FILE}):"]
    score, unit = ((CALL_DISTANCE, "distance") if CALL_DISTANCE in table.columns
                   else (CALL_PROBABILITY, "probability"))
    for row in table.head(shown).itertuples(index=False):
        values = row._asdict()
        verdict = "none of these" if values[NOVEL] else values[widest]
        lines.append(f"  {values[sc.TREATMENT]}: {values[CALL]} ({unit} {values[score]:.3f}); "
                     f"{confidence:.0%} set: {verdict}")
    if len(table) > shown:
        lines.append(f"  ... {len(table) - shown} more in {CALLS_FILE}")
    return lines


def format_screen_calls(result: ScreenCalls) -> str:
    """A predicted screen's calls, with how many it got right where it labels some itself."""
    lines = []
    if result.truth_accuracy is not None:
        lines.append(f"calls right for {result.truth_accuracy:.1%} of the "
                     f"{plural(result.n_truth, 'treatment')} the new screen labels itself "
                     f"(the references, scored alike: {result.calls.labelled_accuracy:.1%})")
    lines += [f"skipped {what}: {why}" for what, why in result.skipped.items()]
    return "\n".join(lines + format_calls(result.calls))


def format_potency(table: pd.DataFrame | None, readout: str) -> list[str]:
    """One line: how many compounds' dose series were fitted, flat or failed; the most
    potent with its EC50 and interval."""
    if table is None or table.empty:
        return []
    fitted = table[table["fit"] == "ok"].sort_values("ec50")
    line = (f"potency ({readout}, 4PL): {plural(len(table), 'compound')} with 4 doses or "
            f"more, {len(fitted)} fitted ({int(fitted['ec50_in_range'].sum())} with the EC50 "
            f"within the doses), {int((table['fit'] == 'flat').sum())} flat, "
            f"{int((table['fit'] == 'failed').sum())} failed")
    if len(fitted):
        top = fitted.iloc[0]
        line += (f"; most potent {top[sc.COMPOUND]}: EC50 {top['ec50']:.3g} "
                 f"({top['ec50_low']:.3g}-{top['ec50_high']:.3g})")
    return [line]


def format_doses(dose: pd.DataFrame | None) -> list[str]:
    """One line per compound with a dose series: distance of each dose to its lowest."""
    if dose is None or dose.empty:
        return []
    lines = []
    for compound, doses in dose.groupby(sc.COMPOUND, sort=True):
        steps = ", ".join(f"{c:g}: {d:.3f}" for c, d in
                          zip(doses[sc.CONCENTRATION], doses["distance_to_lowest_dose"],
                              strict=True))
        trend = doses["dose_trend_spearman"].iloc[0]
        trend_text = "" if pd.isna(trend) else f"; dose trend rho {trend:+.2f}"
        lines.append(f"dose series {compound} (distance to the lowest dose): {steps}"
                     f"{trend_text}")
    return lines


def plural(n: int, noun: str) -> str:
    """``1 well``, ``2 wells``."""
    return f"{n} {noun}{'' if n == 1 else 'es' if noun.endswith('ch') else 's'}"


def partial_note(summary: CVSummary) -> str:
    """``" (2 of 13 folds)"`` when only some folds were run, else empty."""
    return f" ({summary.folds_done} of {summary.folds_total} folds)" if summary.partial() else ""


def format_accuracy(value: Accuracy) -> str:
    """``87.0 % ± 1.2 %`` over seeds, or ``87.0 %`` for one seed."""
    if value.sem is None:
        return f"{value.mean:.1%}"
    return f"{value.mean:.1%} ± {value.sem:.1%}"


def format_cv(result: CVResult) -> str:
    """Accuracies as mean ± SEM over seeds, and the uncertainty lines, for the terminal."""
    s = result.summary
    lines = [f"{s.model} ({s.weights}), {s.n_seeds} seed(s){partial_note(s)}:"]
    for level in ("treatment", "well", "image", "crop"):
        lines.append(f"  {level + ' accuracy':<20}{format_accuracy(s.accuracy(level))}")
    if s.n_seeds > 1:
        e = s.ensemble
        lines.append(f"  ensemble of the seeds: {e.ensemble_accuracy:.1%} "
                     f"({e.n_disagreements} of {e.n} treatments where seeds disagree)")
    for conformal, unit in ((s.conformal, ""), (s.conformal_well, " per well")):
        for level in conformal.levels if conformal is not None else []:
            lines.append(f"  conformal {level.confidence:.0%}{unit} ({level.scheme}): "
                         f"coverage {level.coverage_mean_over_seeds:.1%}, mean set size "
                         f"{level.set_size_mean_over_seeds:.2f} MoAs"
                         f"{calibration_note(level.too_few_calibration, level.calibration_needed)}")
    if s.calibration is not None:
        c = s.calibration
        lines.append(f"  calibration: ECE {c.ece_before:.3f} -> {c.ece_after:.3f} "
                     f"({c.method}; median T {c.temperature_median:.2f})")
    if s.novelty is not None:
        lines.append(f"  {format_novelty(s.novelty)}")
    if s.trained:
        lines.append(f"  trained: {s.trained}")
    if s.calls_not_evaluated:
        lines.append(f"  no calls for the unlabelled treatments: {s.calls_not_evaluated}")
    lines += format_calls(result.calls)
    return "\n".join(lines)


def format_translocation(result: TranslocationResult) -> str:
    """The per-well ratios and, for labelled wells, how well they separate the classes."""
    shown = ["Metadata_Well", "Metadata_Concentration", "Feature_NucCytoRatio",
             "Metadata_CellCount", "Metadata_NucleiFound"]
    lines = [result.wells[[c for c in shown if c in result.wells.columns]]
             .rename(columns={"Metadata_CellCount": "cells (readout)",
                              "Metadata_NucleiFound": "nuclei (split)"})
             .to_string(index=False)]
    scores = result.scores
    if "auc" in scores:
        lines.append(f"AUC {scores['auc']:.3f}, Z' {scores['z_prime']:.2f}"
                     + (f", {scores['holdout']} hold-out accuracy {scores['accuracy']:.1%}"
                        if scores.get("accuracy") is not None else ""))
    if "note" in scores:
        lines.append(f"note: {scores['note']}")
    if result.potency is None or result.potency.empty:
        doses = (result.wells.loc[result.wells[sc.CONCENTRATION] > 0, sc.CONCENTRATION]
                 .nunique() if sc.CONCENTRATION in result.wells.columns else 0)
        lines.append(f"no EC50: the readout's dose series has {plural(doses, 'concentration')}"
                     " of a compound; a four-parameter fit needs 4")
    for _, row in (result.potency if result.potency is not None else pd.DataFrame()).iterrows():
        where = str(row[sc.COMPOUND])
        if sc.CELL_LINE in row.index and str(row[sc.CELL_LINE]) not in where:
            where += f" in {row[sc.CELL_LINE]}"
        lines.append(f"EC50 of the readout, {where}: " + (
            f"{row['ec50']:.3g} (95 % interval {row['ec50_low']:.3g}-{row['ec50_high']:.3g}; "
            f"{row['n_doses']} doses, {row['n_wells']} wells)" if row["fit"] == "ok"
            else f"none ({row['fit']} curve over {row['n_doses']} doses)"))
    return "\n".join(lines)


def format_qc(qc: pd.DataFrame) -> str:
    """One line: fields measured, flagged by reason, and dropped (see profiling.qc)."""
    from cellmorph.profiling.qc import qc_summary

    summary = qc_summary(qc)
    reasons = ", ".join(f"{n} {r}" for r, n in summary["by_reason"].items()) or "none"
    return (f"field QC: {summary['flagged']} of {summary['fields']} fields flagged "
            f"({reasons}); {summary['dropped']} left out of the profiles (qc.drop); "
            "every field's measures and flags in qc.parquet")


def format_cells(images: pd.DataFrame) -> str | None:
    """How many nuclei a cell run found and how many cells it profiled (None for tiles)."""
    if sc.CELL_COUNT not in images.columns:
        return None
    return (f"{int(images[sc.CELL_COUNT].sum()):,} nuclei found in {len(images):,} fields, "
            f"{int(images[sc.COUNT].sum()):,} cells profiled (one table a plate in cells/)")


def format_weak(result: WeakTrainingResult) -> str:
    """A weakly supervised run for the terminal: what it learnt, from what, how the loss
    went, where the models are and what comes next."""
    cfg = result.config
    controls = "controls as a class" if cfg.controls == "class" else "controls left out"
    lines = [f"{cfg.model} ({cfg.weights}), weakly supervised by {cfg.label}: "
             f"{len(result.classes)} classes ({controls}), {result.crops:,} crops from "
             f"{result.plates} plate(s), sampling {cfg.sampling}"]
    for seed, losses in result.train_loss.items():
        lines.append(f"  seed {seed}: loss {losses[0]:.3f} -> {losses[-1]:.3f} over "
                     f"{len(losses)} epoch(s); model {result.models[seed]}")
    if result.trained:
        lines.append(f"  trained: {result.trained}")
    lines.append(f"  next: cellmorph embed {cfg.output} (profiles from the penultimate layer)")
    return "\n".join(lines)


def format_profile_comparison(results: Mapping[str, EvaluationResult]) -> str:
    """Several evaluated sets of profiles side by side (cosine 1-NN), for the terminal."""
    table = compare_evaluations(results)
    for col in ("nsc", "nscb"):
        table[col] = table[col].map(lambda v: f"{v:.1%}")
    table["map"] = table["map"].map(lambda v: "-" if v != v else f"{v:.3f}")  # NaN: no mAP
    return table.rename(columns={"nsc": "NSC", "nscb": "NSCB", "map": "mAP"}).to_string(
        index=False)

