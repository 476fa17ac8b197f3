"""``cellmorph report``: one self-contained HTML page for a run (or a bare prediction table).

The page is rendered from a jinja2 template (``templates/report.html.j2``) on the typed
results of :mod:`cellmorph.reporting.load`; every figure is written beside it as PNG
(``figures/``) and embedded in the page as base64, so the file opens offline and can be sent
to a colleague on its own.
"""

from __future__ import annotations

import base64
import tempfile
from dataclasses import dataclass, field
from html import escape as html_escape
from importlib import metadata, resources
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from cellmorph import schema as sc
from cellmorph.atomic import check_not_input, ensure_writable_dir, writable_target, write_text
from cellmorph.datasets.index import read_index
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.activity import DISTANCE_TO_CONTROLS
from cellmorph.evaluation.calibration import CalibrationResult
from cellmorph.evaluation.calls import (
    CALL,
    CALL_DISTANCE,
    CALL_PROBABILITY,
    DOSES_AGREE,
    NOT_CALLED,
    NOVEL,
    NOVELTY_P,
    Calls,
)
from cellmorph.evaluation.conformal import ConformalResult
from cellmorph.evaluation.cv_scores import CVResult
from cellmorph.evaluation.novelty import summarize_novelty
from cellmorph.evaluation.plates import PlateViews, plate_grid, well_position
from cellmorph.imageio import read_field
from cellmorph.profiling.qc import DROPPED, FLAGS
from cellmorph.reporting.load import PredictedScreen, RunBundle, load_bundle
from cellmorph.reporting.plots import (
    field_thumbnail,
    plot_bars,
    plot_confusion,
    plot_coverage,
    plot_curves,
    plot_embedding,
    plot_plates,
    plot_potency,
    plot_ranked,
    plot_reliability,
    plot_replicates,
)
from cellmorph.reporting.text import (
    calibration_note,
    format_accuracy,
    format_cells,
    format_novelty,
    format_qc,
    partial_note,
)

LOW_CONFIDENCE = 0.5  # a top probability below this is marked in the treatment table


@dataclass
class Figure:
    """One figure of the report: a title, a caption and the PNG."""

    key: str
    title: str
    caption: str
    path: Path

    @property
    def data_uri(self) -> str:
        """The PNG, embedded."""
        return "data:image/png;base64," + base64.b64encode(self.path.read_bytes()).decode()


@dataclass
class Report:
    """What the template renders."""

    title: str
    source: str
    synthetic: bool
    kinds: list[str]
    overview: list[tuple[str, str]]
    configs: dict[str, str]
    versions: dict[str, str]
    dataset: list[tuple[str, str]]
    accuracy: list[dict] = field(default_factory=list)
    accuracy_note: str = ""
    ensemble: dict | None = None
    profiling: list[dict] = field(default_factory=list)
    profiling_notes: list[str] = field(default_factory=list)
    screen_notes: list[str] = field(default_factory=list)  # plates, Z', edge effects
    qc_rows: list[list[str]] = field(default_factory=list)  # flagged fields (first ones)
    conformal: list[dict] = field(default_factory=list)  # title, scheme, rows, figure key
    novelty: list[dict] = field(default_factory=list)  # title, summary, one row per MoA
    treatments: dict | None = None  # columns, rows (dicts with "_class")
    calls: dict | None = None  # the unknowns' calls: backing, columns, rows (first section)
    calls_note: str = ""  # one line where there are none
    figures: dict[str, list[Figure]] = field(default_factory=dict)

    def add(self, section: str, figure: Figure) -> None:
        """Put a figure in a section."""
        self.figures.setdefault(section, []).append(figure)


def build_report(bundle: RunBundle, figures: Path) -> Report:
    """Compute the report's tables and draw its figures (into ``figures``)."""
    figures = ensure_writable_dir(figures)
    synthetic = bundle.synthetic
    kinds = [k for k, present in (("profiling", bundle.profile), ("fine-tuning",
                                                                  bundle.training),
                                  ("comparison of initialisations", bundle.comparison),
                                  ("prediction table", bundle.table),
                                  ("calls for a new screen", bundle.predicted)) if present]
    prov = bundle.provenance or {}
    runtime = prov.get("runtime", {})
    overview = [("source", str(bundle.source)), ("kind", ", ".join(kinds))]
    if runtime:
        precision = runtime.get("precision", "?")
        native = runtime.get("cpu_native_bf16")
        if runtime.get("device") == "cpu" and precision == "bf16":
            precision += " (native on that CPU)" if native else " (emulated)"
        overview += [("device", f"{runtime.get('device')} {runtime.get('gpu', '')}".strip()),
                     ("precision actually used", precision)]
    for key in ("time", "host", "cpu", "index_digest"):
        if prov.get(key):
            overview.append((key.replace("_", " "), str(prov[key])))
    if prov.get("command"):
        overview.append(("command", " ".join(map(str, prov["command"]))))
    if bundle.profile is not None and format_cells(bundle.profile.images):
        overview.append(("single cells", format_cells(bundle.profile.images)))
    report = Report(
        title="cellmorph report" + (" (SYNTHETIC data)" if synthetic else ""),
        source=str(bundle.source), synthetic=synthetic, kinds=kinds, overview=overview,
        configs=bundle.configs,
        versions=prov.get("versions", {"cellmorph": metadata.version("cellmorph")}),
        dataset=[(k.replace("_", " "), ", ".join(v) if isinstance(v, list) else str(v))
                 for k, v in (bundle.dataset or {}).items()])
    if bundle.training is not None:
        _training(report, bundle.training, figures, synthetic)
    if bundle.comparison:
        _comparison(report, bundle.comparison, figures, synthetic)
    if bundle.profile is not None and bundle.profile.qc is not None:
        _field_qc(report, bundle.profile.qc)
    if bundle.evaluation is not None:
        _profiling(report, bundle, figures, synthetic)
    if bundle.predicted is not None:
        _screen_calls(report, bundle.predicted)
    else:
        _calls(report, *_calls_of(bundle))
    if bundle.table is not None:
        _table(report, bundle, figures, synthetic)
    for key, title in (("gradcam", "Grad-CAM: where the network looks"),
                       ("actmax", "Activation maximisation: pretrained beside fine-tuned")):
        if key in bundle.figures:
            target = figures / f"{key}.png"
            target.write_bytes(bundle.figures[key].read_bytes())
            report.add("explain", Figure(key, title, _EXPLAIN_CAPTIONS[key], target))
    return report


def _field_qc(report: Report, qc: pd.DataFrame, shown: int = 30) -> None:
    """The QC line (fields flagged by reason, dropped) and the first flagged fields."""
    report.screen_notes.append(format_qc(qc) + ". How to read: each field is compared with "
                               "its plate's others (robust z-scores); see the table.")
    flagged = qc[qc[FLAGS] != ""].sort_values(sc.KEY_COLUMNS)
    report.qc_rows = [[str(r[sc.PLATE]), str(r[sc.WELL]), str(r[sc.SITE]), str(r[FLAGS]),
                       "yes" if r[DROPPED] else "no"]
                      for _, r in flagged.head(shown).iterrows()]


def _plates(report: Report, views: PlateViews, figures: Path, synthetic: bool,
            qc: pd.DataFrame | None = None) -> None:
    """Plate heatmaps of every well's distance to its DMSO (wells with a QC-flagged field
    crossed out), the edge effects and Z'."""
    edges = views.edges
    flagged = edges[edges["p_value"] < 0.05]
    report.screen_notes.append(
        f"Edge effect (edge against inner wells, Mann-Whitney p < 0.05): "
        f"{len(flagged)} of {len(edges)} plate(s)"
        + (": " + ", ".join(f"{r[sc.PLATE]} ({r['difference']:+.2f})"
                            for _, r in flagged.head(10).iterrows()) if len(flagged) else "")
        + "; all in evaluation/plate_edges.csv.")
    if views.z_prime is not None:
        overall = views.z_prime[views.z_prime[sc.PLATE] == "all"].iloc[0]
        report.screen_notes.append(
            f"Z' of the positive controls against DMSO (distance to the controls): "
            f"{overall['z_prime']:.2f} over all plates ({int(overall['n_positive'])} and "
            f"{int(overall['n_negative'])} wells); above 0.5 an excellent assay, below 0 "
            "the two overlap. Per plate in evaluation/z_prime.csv.")
    report.add("screen", Figure(
        "plates", "Plates: each well's distance to its plate's DMSO",
        "How to read: one panel per plate in its layout (rows A.., columns 1..); bright wells "
        "sit far from the controls. A bright rim is an edge effect; a whole bright plate, a "
        "plate effect the normalisation did not remove. Green crosses: wells with a field "
        "flagged by QC (table above).",
        plot_plates({str(p): plate_grid(g, DISTANCE_TO_CONTROLS)
                     for p, g in views.activity.groupby(sc.PLATE, sort=True)},
                    figures / "plates.png", marks=_flagged_wells(qc), synthetic=synthetic)))


def _flagged_wells(qc: pd.DataFrame | None) -> dict[str, list[tuple[int, int]]]:
    """Per plate, the (row, column) of each well with a QC-flagged field."""
    if qc is None:
        return {}
    flagged = qc.loc[qc[FLAGS] != "", [sc.PLATE, sc.WELL]].drop_duplicates()
    try:
        return {str(plate): [well_position(w) for w in group[sc.WELL]]
                for plate, group in flagged.groupby(sc.PLATE)}
    except CellmorphError:  # wells not named by position: the plates show no crosses
        return {}


def _cell_counts(wells: pd.DataFrame, figures: Path, synthetic: bool) -> Figure:
    """Nuclei per well by MoA (DMSO first): the simplest toxicity readout of a cell run."""
    per_well = wells.assign(_moa=np.where(sc.is_control(wells), "DMSO",
                                          wells[sc.MOA].astype(str)))
    stats = per_well.groupby("_moa")[sc.CELL_COUNT].agg(["mean", "sem"])
    order = ["DMSO", *sorted(m for m in stats.index if m != "DMSO")]
    order = [m for m in order if m in stats.index]
    return Figure("cell_counts", "Nuclei per well",
                  "Nuclei found per well (mean ± SEM over wells), by MoA: cells lost to a "
                  "treatment show as a shorter bar than DMSO's.",
                  plot_bars({m: float(stats.loc[m, "mean"]) for m in order},
                            "nuclei per well", "nuclei", figures / "cell_counts.png",
                            errors={m: _finite(stats.loc[m, "sem"]) for m in order},
                            top=None, synthetic=synthetic))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


_EXPLAIN_CAPTIONS = {
    "gradcam": "The most confidently and correctly predicted crops of each MoA, each explained "
               "by the fold model that never saw its compound (captum's LayerGradCam).",
    "actmax": "Images optimised to excite chosen filters (Fourier parametrisation with "
              "jitter, scale and rotation), for the ImageNet network and after fine-tuning.",
}


def _training(report: Report, cv: CVResult, figures: Path, synthetic: bool) -> None:
    s = cv.summary
    for level in ("treatment", "well", "image", "crop"):
        accuracy = s.accuracy(level)
        report.accuracy.append({"level": level, "value": format_accuracy(accuracy),
                                "seeds": ", ".join(f"{v:.1%}" for v in accuracy.values)})
    report.accuracy_note = (f"{s.model} ({s.weights}), {s.n_seeds} seed(s)"
                            f"{partial_note(s)}; trained: {s.trained or '?'}")
    if s.n_seeds > 1 and cv.ensemble is not None:
        e = cv.ensemble.summary()
        report.ensemble = {"accuracy": f"{e.ensemble_accuracy:.1%}",
                           "mean": f"{e.seed_accuracy_mean:.1%}",
                           "sem": f"{e.seed_accuracy_sem:.1%}",
                           "disagree": ", ".join(e.disagreements) or "none"}
    level = cv.config.report_level
    report.add("accuracy", Figure("confusion", f"Confusion matrix ({level} level, seed "
                                  f"{cv.seeds[0].seed})", "Rows: true MoA; columns: predicted.",
                                  plot_confusion(cv.confusion(0), f"{level}-level predictions",
                                                 figures / "confusion.png",
                                                 synthetic=synthetic)))
    chance = 1 / max(1, len(cv.classes))
    curves = {f"seed {seed.seed}": seed.per_epoch_accuracy for seed in cv.seeds}
    report.add("accuracy", Figure("epochs", "Test accuracy after each epoch",
                                  f"{level} level; dashed: chance (1/{len(cv.classes)}).",
                                  plot_curves(curves, f"{level}-level accuracy per epoch",
                                              "epoch", "accuracy", figures / "epochs.png",
                                              chance=chance, synthetic=synthetic)))
    if cv.calibration:
        first = next(iter(cv.calibration))
        _reliability(report, cv.calibration[first], figures, synthetic, f"{first}'s treatments")
    if "ensemble" in cv.conformal:
        _conformal(report, cv.conformal["ensemble"], figures, synthetic,
                   "Fine-tuning: the ensemble of the seeds' out-of-fold treatment predictions",
                   "conformal_training")
    if cv.conformal_well:
        first = next(iter(cv.conformal_well))
        _conformal(report, cv.conformal_well[first], figures, synthetic,
                   f"Fine-tuning, well level: {first}'s out-of-fold well predictions",
                   "conformal_training_well")
    if cv.novelty is not None:
        _novelty(report, cv.novelty, "Fine-tuning: held-out MoA scored by a model trained "
                 "without it; known MoAs by their leave-one-compound-out folds")
    table = cv.ensemble.table if cv.ensemble is not None else cv.seeds[0].levels["treatment"]
    conf = cv.conformal.get("ensemble")
    report.treatments = _treatment_rows(table, conf)
    if cv.ensemble is not None and len(cv.ensemble.table) >= 5:
        probs = cv.ensemble.table[sc.prob_columns(cv.ensemble.table)].to_numpy()
        report.add("map", Figure("map", "Treatments in prediction space (t-SNE)",
                                 "Each treatment's mean class probabilities, coloured by MoA.",
                                 plot_embedding(_tsne(probs), cv.ensemble.table[sc.MOA],
                                                figures / "map_predictions.png",
                                                synthetic=synthetic)))


def _comparison(report: Report, results: dict[str, CVResult], figures: Path,
                synthetic: bool) -> None:
    names = list(results)
    level = results[names[0]].config.report_level
    summary = {n: results[n].summary for n in names}
    accuracy = {n: summary[n].accuracy(level) for n in names}
    path = plot_bars({n: accuracy[n].mean for n in names},
                     "accuracy by initialisation, mean ± SEM", "accuracy",
                     figures / "compare_init.png",
                     errors={n: accuracy[n].sem for n in names},
                     points={n: accuracy[n].values for n in names},
                     chance=1 / max(1, len(results[names[0]].classes)), synthetic=synthetic)
    trained = "; ".join(f"{n}: {summary[n].trained or '?'}" for n in names)
    report.add("comparison", Figure("compare_init", "Pretrained vs Xavier initialisation",
                                    f"Each dot is one seed. Trained: {trained}.", path))


def _profiling(report: Report, bundle: RunBundle, figures: Path, synthetic: bool) -> None:
    ev = bundle.evaluation
    for res in ev.nn:
        report.profiling.append({"holdout": res.holdout.upper(), "metric": res.metric,
                                 "accuracy": f"{res.accuracy:.1%}", "n": res.n_treatments,
                                 "dropped": ", ".join(res.dropped_moas) or "-"})
    report.profiling_notes = [f"{k.replace('_', ' ')}: {v}" for k, v in ev.notes.items()]
    report.profiling_notes += [f"skipped {k.replace('_', ' ')}: {v}"
                               for k, v in ev.skipped.items()]
    if ev.nn:
        first = ev.nn[0]
        report.add("profiling", Figure(
            "confusion_nsc", f"{first.holdout.upper()} 1-NN confusion ({first.metric})",
            "Treatment profiles, nearest neighbour among other compounds.",
            plot_confusion(ev.confusion(first.holdout, first.metric), "1-NN predictions",
                           figures / "confusion_nsc.png", synthetic=synthetic)))
    if ev.map_consistency is not None and ev.map_activity is not None:
        moa = ev.map_consistency.sort_values("mean_average_precision", ascending=False)
        report.add("profiling", Figure(
            "map_moa", "MoA consistency mAP (copairs)",
            "Stars: corrected permutation p-value below the threshold.",
            plot_bars(dict(zip(moa[sc.MOA], moa["mean_average_precision"], strict=True)),
                      "mAP per MoA", "mAP", figures / "map_moa.png",
                      pvalues=dict(zip(moa[sc.MOA], moa["corrected_p_value"], strict=True)),
                      threshold=ev.config.map_threshold, synthetic=synthetic)))
        act = ev.map_activity
        report.add("profiling", Figure(
            "map_activity", "Phenotypic activity mAP (copairs)",
            "Each treatment's replicate wells retrieved against DMSO, ranked.",
            plot_ranked(act["mean_average_precision"].to_numpy(),
                        act["below_corrected_p"].to_numpy(bool), "activity mAP", "mAP",
                        figures / "map_activity.png", threshold=ev.config.map_threshold,
                        synthetic=synthetic)))
    if bundle.profile is not None and sc.CELL_COUNT in bundle.profile.wells.columns:
        report.add("profiling", _cell_counts(bundle.profile.wells, figures, synthetic))
    if ev.plates is not None:
        _plates(report, ev.plates, figures, synthetic,
                bundle.profile.qc if bundle.profile is not None else None)
    if ev.replicates is not None:
        rep = ev.replicates
        report.add("screen", Figure(
            "percent_replicating", f"Percent replicating: {rep.percent:.0%}",
            "How to read: a treatment replicates when its wells correlate better than the "
            "95th percentile of random groups of wells of different treatments (the dashed "
            "line; Way et al. 2022, as JUMP measures it); the activity mAP above asks the "
            "same question by rank, against DMSO.",
            plot_replicates(rep.table["replicate_correlation"], rep.null, rep.threshold,
                            figures / "percent_replicating.png", synthetic=synthetic)))
    if ev.potency is not None and (ev.potency["fit"] != "failed").any():
        report.add("screen", Figure(
            "potency", "Potency: each compound's activity against its dose",
            "How to read: points are wells (distance of the profile to its plate's DMSO), "
            "the curve a four-parameter logistic, the dashed line its EC50 and the band the "
            "EC50's 95 % bootstrap interval; \"flat\": no curve beats a constant (F test, "
            "5 %), so no EC50 is given. Most potent first; all in evaluation/potency.csv.",
            plot_potency(ev.activity, ev.potency, DISTANCE_TO_CONTROLS,
                         figures / "potency.png", synthetic=synthetic)))
    if len(ev.treatments) >= 5:
        report.add("map", Figure("map_profiles", "Treatment profiles (t-SNE)",
                                 "Normalised treatment profiles, coloured by MoA.",
                                 plot_embedding(_tsne(sc.to_matrix(ev.treatments)),
                                                ev.treatments[sc.MOA],
                                                figures / "map_profiles.png",
                                                synthetic=synthetic)))
    if ev.conformal is not None:
        _conformal(report, ev.conformal, figures, synthetic,
                   "Profiles: nearest-neighbour scores of the treatment profiles",
                   "conformal_profiles")
    if ev.novelty is not None:
        _novelty(report, ev.novelty, "Profiles: nearest-neighbour scores, the held-out MoA "
                 "removed from the references")
    if report.treatments is None:
        nsc = first.predictions
        report.treatments = _treatment_rows(nsc, ev.conformal)


def _table(report: Report, bundle: RunBundle, figures: Path, synthetic: bool) -> None:
    t = bundle.table
    report.accuracy.append({"level": "treatment", "value": f"{t.accuracy:.1%}",
                            "seeds": "-"})
    report.accuracy_note = f"{len(t.table)} treatments from {t.source.name}"
    report.add("accuracy", Figure("confusion", "Confusion matrix", "Rows: true MoA.",
                                  plot_confusion(t.confusion(), "treatment predictions",
                                                 figures / "confusion.png",
                                                 synthetic=synthetic)))
    if t.calibration is not None:
        _reliability(report, t.calibration, figures, synthetic, t.source.name)
    if t.conformal is not None:
        _conformal(report, t.conformal, figures, synthetic,
                   f"The probabilities of {t.source.name}", "conformal_table")
    report.treatments = _treatment_rows(t.table, t.conformal)


def _novelty(report: Report, table: pd.DataFrame, title: str) -> None:
    report.novelty.append({"title": title, "summary": format_novelty(summarize_novelty(table)),
                           "rows": [{"moa": r.held_out_moa, "n": r.n_novel, "scheme": r.scheme,
                                     "detection": f"{r.detection_rate:.0%}",
                                     "false_alarm": f"{r.false_alarm_rate:.1%}",
                                     "auroc": f"{r.auroc:.3f}",
                                     **_calls_rule(r)} for r in table.itertuples()]})


def _calls_rule(row: object) -> dict[str, str]:
    """A novelty row's rates under the calls' rule (empty set or atypical); blank for a
    table written before it was measured."""
    flagged = getattr(row, "none_of_these_rate", None)
    if flagged is None or pd.isna(flagged):
        return {"flagged": "", "flagged_false": ""}
    return {"flagged": f"{flagged:.0%}",
            "flagged_false": f"{row.none_of_these_false_alarm_rate:.1%}"}


def _reliability(report: Report, result: CalibrationResult, figures: Path, synthetic: bool,
                 what: str) -> None:
    report.add("accuracy", Figure(
        "reliability", "Reliability of the probabilities",
        f"Reliability of {what}: in each bin of top probability, how often the top MoA was "
        "right. Blue: after temperature scaling fitted leave-one-compound-out (each "
        "compound's temperature from the other compounds only).",
        plot_reliability(result.reliability_before, result.reliability_after,
                         figures / "reliability.png",
                         ece=(result.ece_before, result.ece_after), synthetic=synthetic)))


def _conformal(report: Report, result: ConformalResult, figures: Path, synthetic: bool,
               title: str, key: str) -> None:
    validity, efficiency = result.validity(), result.efficiency()
    overall = validity[validity["moa"] == "all"].set_index("confidence")
    notes = {level["confidence"]: calibration_note(level["too_few_calibration"],
                                                   level["calibration_needed"])
             for level in result.summary()["levels"]}
    rows = [{"confidence": f"{row['confidence']:.0%}",
             "coverage": f"{overall.loc[row['confidence'], 'coverage']:.1%}"
                         f"{notes[row['confidence']]}",
             "size": f"{row['mean_set_size']:.2f}",
             "single": f"{row['single_label_rate']:.0%}", "empty": f"{row['empty_rate']:.0%}"}
            for _, row in efficiency.iterrows()]
    schemes = [{"scheme": row["scheme"] + (f" ({row['used']})" if row["scheme"] == "auto"
                                           else ""),
                "confidence": f"{row['confidence']:.0%}", "coverage": f"{row['coverage']:.1%}",
                "size": f"{row['mean_set_size']:.2f}", "single": f"{row['single_label_rate']:.0%}",
                "empty": f"{row['empty_rate']:.0%}"}
               for _, row in result.compare_schemes().iterrows()]
    assumes = result.notes.get("exchangeability")
    scheme = f"{result.scheme}." + (f" {assumes[0].upper()}{assumes[1:]}." if assumes else "")
    report.conformal.append({"title": title, "scheme": scheme, "rows": rows,
                             "schemes": schemes, "key": key})
    report.add(key, Figure(key, "Validity and efficiency",
                           "Left: coverage against the confidence asked for (dots: one MoA "
                           "each). Right: prediction-set size.",
                           plot_coverage(validity, efficiency, figures / f"{key}.png",
                                         title=result.method, synthetic=synthetic)))


def _treatment_rows(table: pd.DataFrame, conformal: ConformalResult | None) -> dict:
    """The per-treatment table: prediction, confidence, conformal set, with flags."""
    df = table.copy()
    probs = sc.prob_columns(df)
    if probs:
        df["predicted"] = sc.predicted_classes(df)
        df["top probability"] = df[probs].to_numpy(float).max(1)
    confidence = 0.9
    if conformal is not None:
        sets = conformal.table.set_index(sc.TREATMENT)
        confidence = 0.9 if 0.9 in conformal.confidences else conformal.confidences[0]
        column = conformal.set_column(confidence)
        df["set"] = df[sc.TREATMENT].map(sets[column])
        df["set size"] = df[sc.TREATMENT].map(sets[column.replace("Set_", "SetSize_")])
    columns = [c for c in (sc.TREATMENT, sc.MOA, "predicted", "top probability", "set",
                           "set size", "seeds_agree", "neighbour", "distance") if c in df]
    headers = {"set": f"{confidence:.0%} set", "seeds_agree": "seeds agree"}
    rows = []
    for _, r in df.iterrows():
        flags = []
        if "top probability" in df and r["top probability"] < LOW_CONFIDENCE:
            flags.append("low")
        if "set size" in df and pd.notna(r.get("set size")) and r["set size"] > 1:
            flags.append("multi")
        if str(r.get("predicted")) != str(r[sc.MOA]):
            flags.append("wrong")
        rows.append({"cells": [_cell(r[c]) for c in columns], "flags": " ".join(flags)})
    return {"columns": [headers.get(c, c.removeprefix("Metadata_")) for c in columns],
            "rows": rows, "set_confidence": f"{confidence:.0%}",
            "set_cells": [i for i, c in enumerate(columns) if c in ("set", "set size")]}


NO_UNKNOWNS = ("No unlabelled treatments: every treated compound of this screen has a label, "
               "so there is nothing to call (mark a compound unlabelled to get its call).")


def _calls_of(bundle: RunBundle) -> tuple[Calls | None, str | None, Path | None]:
    """The calls the page opens on: the fine-tuning run's where it has some, else the
    profiles'; with why there are none where neither has, and the index they came from."""
    found = []
    if bundle.training is not None:
        found.append((bundle.training.calls, bundle.training.summary.calls_not_evaluated,
                      bundle.training.config.index))
    if bundle.evaluation is not None and bundle.profile is not None:
        found.append((bundle.evaluation.calls, bundle.evaluation.skipped.get("calls"),
                      bundle.profile.config.index))
    for calls, why, index in found:
        if calls is not None and len(calls.table):
            return calls, why, index
    return next(((c, w, i) for c, w, i in found if c is not None or w), (None, None, None))


def _thumbnails(index_path: Path | None, treatments: set[str]) -> dict[str, str]:
    """A small RGB picture of one field of each treatment (its first, in plate, well and
    site order), as a data URI; none where the index or its images cannot be read (a run
    moved without its images still gets its page)."""
    try:
        index = read_index(index_path) if index_path is not None else None
    except CellmorphError:
        return {}
    if index is None:
        return {}
    channels = sc.channels_of(index)
    first = (index[index[sc.TREATMENT].astype(str).isin(treatments)]
             .sort_values(sc.KEY_COLUMNS).drop_duplicates(sc.TREATMENT))
    out = {}
    for _, row in first.iterrows():
        try:
            png = field_thumbnail(read_field(row, channels))
        except (CellmorphError, OSError):
            continue
        out[str(row[sc.TREATMENT])] = "data:image/png;base64," + base64.b64encode(png).decode()
    return out


def _screen_calls(report: Report, predicted: PredictedScreen) -> None:
    """A new screen's calls (``cellmorph predict``): its fields beside its nearest
    references' (from the reference run's index), and how many it got right where the
    screen labels some itself."""
    result = predicted.result
    _calls(report, result.calls, None, predicted.index, predicted.reference_index)
    if report.calls is not None:
        report.calls["reference"] = str(predicted.reference)
        if result.truth_accuracy is not None:
            report.calls["truth"] = (f"{result.truth_accuracy:.0%} of the {result.n_truth} "
                                     "treatment(s) the new screen labels itself")


def _calls(report: Report, calls: Calls | None, why_not: str | None,
           index: Path | None = None, reference_index: Path | None = None) -> None:
    """The calls table the page opens on, or one line saying why there is none
    (``reference_index``: where the nearest references' fields are, if not in ``index``)."""
    if calls is not None and calls.not_called:
        report.calls_note = (f"{len(calls.not_called)} unlabelled dose(s) of labelled compounds "
                             f"not called: {NOT_CALLED}.")
    if calls is None or calls.table.empty:
        report.calls_note = (report.calls_note or (f"No calls: {why_not}" if why_not
                                                   else NO_UNKNOWNS))
        return
    table = calls.table
    shown, confidence = calls.shown_sets, calls.shown_confidence
    score = CALL_DISTANCE if CALL_DISTANCE in table.columns else CALL_PROBABILITY
    neighbours = [c.removesuffix("_MoA") for c in table.columns
                  if c.startswith("Neighbour_") and c.endswith("_MoA")]
    nearest = table["Neighbour_1"].astype(str) if "Neighbour_1" in table else pd.Series()
    treated = set(table[sc.TREATMENT].astype(str))
    if reference_index is None:  # the references are the same screen's
        pictures = references = _thumbnails(index, {*treated, *nearest})
    else:
        pictures = _thumbnails(index, treated)
        references = _thumbnails(reference_index, set(nearest))
    rows = []
    for _, r in table.iterrows():
        near = "; ".join(f"{r[n]} ({r[n + '_MoA']}, {r[n + '_Distance']:.3f})"
                         for n in neighbours)
        verdict = "none of these" if r[NOVEL] else r[shown]
        doses = {True: "yes", False: "no"}.get(r.get(DOSES_AGREE), "one dose")
        rows.append({"cells": [_cell(r.get(sc.COMPOUND)), _cell(r.get(sc.CONCENTRATION)),
                               r[CALL], _cell(r[score]), verdict, _cell(r[NOVELTY_P]),
                               doses, near],
                     "flags": "novel" if r[NOVEL] else "",
                     "pictures": [pictures.get(str(r[sc.TREATMENT]), ""),
                                  references.get(str(r.get("Neighbour_1")), "")]})
    report.calls = {
        "reference": None, "truth": None,  # a new screen's (`_screen_calls`)
        "route": calls.route, "n": len(table), "novel": int(table[NOVEL].sum()),
        "accuracy": f"{calls.labelled_accuracy:.0%}",
        "coverage": f"{calls.labelled_coverage[confidence]:.0%}",
        "false_alarm": f"{calls.labelled_false_alarm:.0%}",
        "confidence": f"{confidence:.0%}",
        "pictures": bool(pictures or references),
        "columns": ["compound", "concentration", "call",
                    "distance" if score == CALL_DISTANCE else "probability",
                    f"{confidence:.0%} set", "novelty p", "doses agree",
                    "nearest labelled treatments (MoA, distance)"],
        "rows": rows}


def _cell(value) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:.3f}" if np.isfinite(value) else ""
    return "" if value is None else str(value)


def _tsne(values: np.ndarray) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(max(2, min(30, (len(values) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0,
                max_iter=500).fit_transform(np.asarray(values, dtype=np.float64))


def render(report: Report) -> str:
    """The report's HTML text, from the package's template."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("cellmorph") / "reporting" /
                                           "templates")),
        autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(r=report)


@dataclass(frozen=True)
class ReportPage:
    """A rendered report: the self-contained HTML, and the file it was written to (None when
    it was kept in memory)."""

    html: str
    path: Path | None = None

    def __repr__(self) -> str:
        where = self.path if self.path is not None else "in memory"
        return f"ReportPage({where}, {len(self.html) // 1024} kB)"

    def _repr_html_(self) -> str:
        # In an iframe, so the page's own styles and script stay out of the notebook's.
        return (f'<iframe srcdoc="{html_escape(self.html, quote=True)}" '
                'style="width:100%;height:800px;border:1px solid #ddd"></iframe>')


def write_report(source: Path | str, out: Path | str | None = None) -> ReportPage:
    """Build the report of ``source`` (a run folder or a prediction table); write it to
    ``out`` with its figures beside it in ``figures/``, or keep it in memory (figures drawn
    in a temporary folder) when ``out`` is None."""
    source = Path(source)
    if out is None:
        with tempfile.TemporaryDirectory(prefix="cellmorph-report-") as figures:
            return ReportPage(render(build_report(load_bundle(source), Path(figures))))
    html = Path(out)
    if html.suffix.lower() not in (".html", ".htm"):
        raise CellmorphError(f"report output {html}: give a file name ending in .html")
    check_not_input(html, source)
    writable_target(html)
    bundle = load_bundle(source)
    report = build_report(bundle, html.parent / "figures")
    text = render(report)
    return ReportPage(text, write_text(text, html))
