"""Writing results to disk: the tables, JSON and plots of each kind of run.

Each writer takes the typed result a stage returned and puts it in the run folder's layout;
nothing here computes a number.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from cellmorph import schema as sc
from cellmorph.atomic import ensure_writable_dir, write_csv, write_json, write_parquet
from cellmorph.config import EvaluateConfig, TrainConfig, save_config
from cellmorph.evaluation.calls import CALLS_FILE
from cellmorph.records import as_dict
from cellmorph.reporting.anndata import write_h5ad
from cellmorph.reporting.figures import (
    cv_figures,
    evaluation_figures,
    translocation_figures,
    weak_figures,
)
from cellmorph.reporting.plots import plot_bars, plot_curves, plot_image_grid, save
from cellmorph.reporting.text import partial_note

# Result types only as annotations: their modules load torch, which a command that runs no
# network (evaluate, export) never needs (tests/test_cli.py checks it).
if TYPE_CHECKING:
    from cellmorph.evaluation.calls import ScreenCalls
    from cellmorph.evaluation.conformal import ConformalResult
    from cellmorph.evaluation.cv_scores import CVResult
    from cellmorph.evaluation.profiles import EvaluationResult
    from cellmorph.evaluation.readout import TranslocationResult
    from cellmorph.interpret.run import ExplainResult
    from cellmorph.profiling.screen import ProfileResult
    from cellmorph.training.weak import WeakTrainingResult

# What the writers (and the commands that write into a run folder afterwards) put at the top
# of a run folder: the runs claim these names in their manifests.
QC_FILE = "qc.parquet"  # a profiling run's fields: image quality, flags, dropped or not
PROFILE_FILES = (*(f"profiles_{level}.{ext}" for ext in ("parquet", "h5ad")
                   for level in ("image", "well", "treatment")), "timings.json", QC_FILE)
CV_FILES = ("metrics.json", "accuracy_per_epoch.png", "ensemble_treatment.csv", "novelty.csv",
            CALLS_FILE,
            *(f"conformal{x}" for x in ("_treatment.csv", "_validity.csv", "_efficiency.csv",
                                        "_efficiency_per_moa.csv", "_schemes.csv", ".png")))
EVALUATION_FOLDER = "evaluation"  # `cellmorph evaluate RUN`'s default output
REPORT_FILES = ("report.html", "figures")
EXPLAIN_FOLDER = "explain"
PROFILE_OUTPUTS = (*PROFILE_FILES, EVALUATION_FOLDER, *REPORT_FILES, EXPLAIN_FOLDER)
WEAK_FILES = ("training.json", "training_loss.png")
EMBED_FOLDER = "embed"  # `cellmorph embed RUN`'s default output: a profiling run of its own
PREDICT_RECORD = "predict.json"  # `cellmorph predict`: the run it came from, what backs it
PREDICT_OUTPUTS = (*PROFILE_OUTPUTS, CALLS_FILE, PREDICT_RECORD)
MODEL_PREDICT_OUTPUTS = (CALLS_FILE, PREDICT_RECORD, *REPORT_FILES)  # from fold models
TRAIN_OUTPUTS = (*CV_FILES, *WEAK_FILES, *REPORT_FILES, EXPLAIN_FOLDER, EMBED_FOLDER)


def write_profiles(result: ProfileResult, out: Path | str) -> dict[str, Path]:
    """``profiles_image/well/treatment.parquet`` and ``timings.json``."""
    out = ensure_writable_dir(Path(out))
    start = time.perf_counter()
    tables = {"images": (result.images, "profiles_image.parquet"),
              "wells": (result.wells, "profiles_well.parquet"),
              "treatments": (result.treatments, "profiles_treatment.parquet")}
    # Parquet encoding releases the GIL: the three levels are written side by side.
    with ThreadPoolExecutor(len(tables)) as pool:
        futures = {key: pool.submit(write_parquet, table, out / name)
                   for key, (table, name) in tables.items()}
        paths = {key: future.result() for key, future in futures.items()}
    if result.qc is not None:
        paths["qc"] = write_parquet(result.qc, out / QC_FILE)
    paths["config"] = out / "config.yaml"
    timings = {**result.timings, "write": time.perf_counter() - start}
    paths["timings"] = write_json(timings, out / "timings.json")
    return paths


def write_evaluation(result: EvaluationResult, out: Path | str) -> Path:
    """Metrics, per-treatment 1-NN predictions, mAP tables and the plots, under ``out``."""
    out = ensure_writable_dir(Path(out))
    save_config(result.config, out / "evaluate_config.yaml")
    save_figures(evaluation_figures(result), out)
    if result.map_activity is not None:
        write_csv(result.map_activity, out / "map_activity.csv")
    if result.map_consistency is not None:
        write_csv(result.map_consistency, out / "map_moa_consistency.csv")
    if result.activity is not None and len(result.activity):
        write_csv(result.activity, out / "distance_to_controls.csv")
    if result.dose is not None and len(result.dose):
        write_csv(result.dose, out / "dose_series.csv")
    if result.potency is not None and len(result.potency):
        write_csv(result.potency, out / "potency.csv")
    if result.replicates is not None:
        write_csv(result.replicates.table, out / "percent_replicating.csv")
    if result.plates is not None:
        write_csv(result.plates.edges, out / "plate_edges.csv")
        if result.plates.z_prime is not None:
            write_csv(result.plates.z_prime, out / "z_prime.csv")
    if result.calls is not None and len(result.calls.table):
        write_csv(result.calls.table, out / CALLS_FILE)
    write_csv(result.nn_predictions(), out / "nn_predictions.csv")
    if result.novelty is not None:
        write_csv(result.novelty, out / "novelty.csv")
    if result.conformal is not None:
        write_conformal(result.conformal, out, "conformal")
    return write_json(result.metrics(), out / "metrics.json")


def write_screen_calls(result: ScreenCalls, run: Path, settings: EvaluateConfig | TrainConfig,
                       out: Path) -> Path:
    """A predicted screen's ``calls_treatment.csv`` and ``predict.json`` (``settings``: the
    reference's evaluation settings, or the training run's config, whose conformal and
    novelty settings made the calls)."""
    write_csv(result.calls.table, out / CALLS_FILE)
    kind = "evaluate" if isinstance(settings, EvaluateConfig) else "train"
    return write_json({"run": str(run), kind: settings.model_dump(mode="json"),
                       "calls": as_dict(result.calls.summary()),
                       "truth_accuracy": result.truth_accuracy, "n_truth": result.n_truth,
                       "notes": result.notes, "skipped": result.skipped},
                      out / PREDICT_RECORD)


def write_conformal(result: ConformalResult, out: Path, stem: str) -> Path:
    """``<stem>_treatment.csv`` (p-values, sets), validity and efficiency tables (overall, per
    MoA, every scheme side by side); the plot is among the result's figures."""
    write_csv(result.table, out / f"{stem}_treatment.csv")
    write_csv(result.validity(), out / f"{stem}_validity.csv")
    write_csv(result.efficiency(), out / f"{stem}_efficiency.csv")
    write_csv(result.efficiency_per_moa(), out / f"{stem}_efficiency_per_moa.csv")
    return write_csv(result.compare_schemes(), out / f"{stem}_schemes.csv")


def save_figures(figures: dict[str, Figure], out: Path) -> list[Path]:
    """Each figure as ``out/<name>.png`` (names may hold a seed's folder)."""
    return [save(fig, out / f"{name}.png") for name, fig in figures.items()]


def write_cv(result: CVResult, out: Path | str) -> Path:
    """Per seed: predictions per level, metrics, confusion; for the run: metrics and curves."""
    out = ensure_writable_dir(Path(out))
    for seed in result.seeds:
        rep = ensure_writable_dir(out / f"seed{seed.seed}")
        for lvl, table in seed.levels.items():
            write_csv(table, rep / f"predictions_{lvl}.csv")
        write_json(seed.metrics, rep / "metrics.json")
        if f"seed{seed.seed}" in result.conformal:
            write_csv(result.conformal[f"seed{seed.seed}"].table,
                      rep / "conformal_treatment.csv")
        if f"seed{seed.seed}" in result.conformal_well:
            write_conformal(result.conformal_well[f"seed{seed.seed}"], rep, "conformal_well")
    if result.ensemble is not None:
        write_csv(result.ensemble.table, out / "ensemble_treatment.csv")
    if result.novelty is not None:
        write_csv(result.novelty, out / "novelty.csv")
    if "ensemble" in result.conformal:
        write_conformal(result.conformal["ensemble"], out, "conformal")
    if result.calls is not None and len(result.calls.table):
        write_csv(result.calls.table, out / CALLS_FILE)
    save_figures(cv_figures(result), out)
    return write_json(as_dict(result.summary), out / "metrics.json")


def write_weak(result: WeakTrainingResult, out: Path | str) -> Path:
    """``training.json`` (labels, crops, losses, models) and ``training_loss.png``."""
    out = ensure_writable_dir(Path(out))
    save_figures(weak_figures(result), out)
    return write_json(result.as_json(), out / "training.json")


def write_comparison(results: dict[str, CVResult], out: Path | str) -> Path:
    """Side-by-side plots and JSON of runs that differ only in their initialisation."""
    out = ensure_writable_dir(Path(out))
    names = list(results)
    first = results[names[0]].config
    level = first.report_level
    summaries = {n: results[n].summary for n in names}
    accuracy = {n: summaries[n].accuracy(level) for n in names}
    synthetic = any(sc.is_synthetic(s.crops) for r in results.values() for s in r.seeds)
    chance = 1 / max(1, len(results[names[0]].classes))
    plot_bars({n: accuracy[n].mean for n in names},
              f"{first.model}: {level} accuracy, mean ± SEM over {len(first.seeds)} seed(s)"
              f"{partial_note(summaries[names[0]])}", "accuracy", out / "compare_init.png",
              errors={n: accuracy[n].sem for n in names},
              points={n: accuracy[n].values for n in names}, chance=chance,
              synthetic=synthetic)
    plot_curves({n: summaries[n].per_epoch_accuracy.mean for n in names},
                f"{first.model}: {level} test accuracy per epoch", "epoch", "accuracy",
                out / "compare_init_epochs.png",
                bands={n: summaries[n].per_epoch_accuracy.sem for n in names},
                chance=chance, synthetic=synthetic)
    return write_json(as_dict(summaries), out / "compare_init.json")


def write_translocation(result: TranslocationResult, out: Path | str) -> Path:
    """Field and well readouts, the scores, and the dose-response plot."""
    out = ensure_writable_dir(Path(out))
    write_csv(result.fields, out / "translocation_fields.csv")
    write_csv(result.wells, out / "translocation_wells.csv")
    if result.potency is not None and len(result.potency):
        write_csv(result.potency, out / "translocation_potency.csv")
    save_figures(translocation_figures(result), out)
    return write_json({"settings": vars(result.settings), **result.scores},
                      out / "translocation.json")


def write_h5ad_profiles(result: ProfileResult, out: Path | str) -> list[Path]:
    """``profiles_<level>.h5ad`` (AnnData) beside the Parquet tables."""
    out = Path(out)
    return [write_h5ad(table, out / f"profiles_{name}.h5ad") for name, table in
            (("image", result.images), ("well", result.wells),
             ("treatment", result.treatments))]


def write_explain(result: ExplainResult, out: Path | str) -> dict[str, Path]:
    """``actmax.png`` (networks side by side), ``gradcam.png`` and ``explain.json``."""
    from cellmorph.interpret.run import overlays

    out = ensure_writable_dir(Path(out))
    paths: dict[str, Path] = {}
    networks = list(result.actmax)
    if networks:
        panels = list(zip(*[result.actmax[n] for n in networks], strict=True))
        images = [a.image for row in panels for a in row]
        titles = [f"{n}\n{a.layer} #{a.channel}" for row in panels
                  for n, a in zip(networks, row, strict=True)]
        paths["actmax"] = plot_image_grid(
            images, titles, out / "actmax.png", columns=len(networks) * min(2, len(panels)),
            title=f"{result.model}: images that excite each filter most",
            synthetic=result.synthetic)
    if result.crops:
        images, titles = [], []
        for crop, over in zip(result.crops, overlays(result), strict=True):
            images += [np.clip(crop.image / max(float(crop.image.max()), 1e-6), 0, 1), over]
            titles += [f"{crop.moa}\n{crop.treatment}", f"Grad-CAM, p={crop.probability:.2f}\n"
                       f"(fold {crop.fold})"]
        paths["gradcam"] = plot_image_grid(images, titles, out / "gradcam.png", columns=4,
                                           title="where the network looks (Grad-CAM)",
                                           synthetic=result.synthetic)
    summary = {"model": result.model,
               "actmax": {n: [{"layer": a.layer, "channel": a.channel,
                               "start_activation": a.start_activation,
                               "final_activation": a.final_activation}
                              for a in result.actmax[n]] for n in networks},
               "crops": [{"moa": c.moa, "treatment": c.treatment, "fold": c.fold,
                          "probability": c.probability} for c in result.crops]}
    paths["json"] = write_json(summary, out / "explain.json")
    return paths
