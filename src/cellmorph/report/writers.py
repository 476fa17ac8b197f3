"""Writing results to disk: the tables, JSON and plots of each kind of run.

Each writer takes the typed result a stage returned and puts it in the run folder's layout;
nothing here computes a number.
"""

from __future__ import annotations

import time
from pathlib import Path

from cellmorph import schema as sc
from cellmorph.atomic import ensure_writable_dir, write_csv, write_json, write_parquet
from cellmorph.config import save_config
from cellmorph.evaluation.cv import CVResult
from cellmorph.evaluation.pipeline import EvaluationResult
from cellmorph.profiling.pipeline import ProfileResult
from cellmorph.report.plots import plot_bars, plot_confusion, plot_curves


def write_profiles(result: ProfileResult, out: Path | str) -> dict[str, Path]:
    """``profiles_image/well/treatment.parquet`` and ``timings.json``."""
    out = ensure_writable_dir(Path(out))
    start = time.perf_counter()
    paths = {
        "images": write_parquet(result.images, out / "profiles_image.parquet"),
        "wells": write_parquet(result.wells, out / "profiles_well.parquet"),
        "treatments": write_parquet(result.treatments, out / "profiles_treatment.parquet"),
        "config": out / "config.yaml",
    }
    timings = {**result.timings, "write": time.perf_counter() - start}
    paths["timings"] = write_json(timings, out / "timings.json")
    return paths


def write_evaluation(result: EvaluationResult, out: Path | str) -> Path:
    """Metrics, per-treatment 1-NN predictions, mAP tables and the plots, under ``out``."""
    out = ensure_writable_dir(Path(out))
    save_config(result.config, out / "evaluate_config.yaml")
    for res in result.nn:
        cm = result.confusion(res.holdout, res.metric)
        plot_confusion(cm, f"{res.holdout.upper()} 1-NN ({res.metric}): "
                       f"{res.accuracy:.1%} of {res.n_treatments} treatments",
                       out / f"confusion_{res.holdout}_{res.metric}.png")
    if result.map_activity is not None and result.map_consistency is not None:
        write_csv(result.map_activity, out / "map_activity.csv")
        write_csv(result.map_consistency, out / "map_moa_consistency.csv")
        consistency = result.map_consistency
        plot_bars(dict(zip(consistency[sc.MOA], consistency["mean_average_precision"],
                           strict=True)), "MoA consistency mAP (copairs)", "mAP",
                  out / "map_moa_consistency.png")
    write_csv(result.nn_predictions(), out / "nn_predictions.csv")
    return write_json(result.metrics(), out / "metrics.json")


def write_cv(result: CVResult, out: Path | str) -> Path:
    """Per seed: predictions per level, metrics, confusion; for the run: metrics and curves."""
    out = ensure_writable_dir(Path(out))
    level = result.config.report_level
    for seed in result.seeds:
        rep = ensure_writable_dir(out / f"seed{seed.seed}")
        for lvl, table in seed.levels.items():
            write_csv(table, rep / f"predictions_{lvl}.csv")
        final = seed.levels[level]
        acc = seed.metrics[f"{level}_accuracy"]
        plot_confusion(result.confusion(result.seeds.index(seed)),
                       f"{level}-level accuracy {acc:.1%} over {len(final)} {level}s",
                       rep / "confusion.png")
        write_json(seed.metrics, rep / "metrics.json")
    path = write_json(result.summary, out / "metrics.json")
    curves = {f"seed {s.seed}": s.per_epoch_accuracy for s in result.seeds}
    plot_curves(curves, f"{level}-level test accuracy per epoch", "epoch", "accuracy",
                out / "accuracy_per_epoch.png")
    return path


def write_comparison(results: dict[str, CVResult], out: Path | str) -> Path:
    """Side-by-side plots and JSON of runs that differ only in their initialisation."""
    out = ensure_writable_dir(Path(out))
    names = list(results)
    first = results[names[0]].config
    level = first.report_level
    key = f"{level}_accuracy"
    summaries = {n: results[n].summary for n in names}
    plot_bars({n: summaries[n][key]["mean"] for n in names},
              f"{first.model}: {level} accuracy, mean +- SEM over {len(first.seeds)} seed(s)",
              "accuracy", out / "compare_init.png",
              errors={n: summaries[n][key]["sem"] for n in names})
    plot_curves({n: summaries[n]["per_epoch_accuracy"]["mean"] for n in names},
                f"{first.model}: {level} test accuracy per epoch", "epoch", "accuracy",
                out / "compare_init_epochs.png",
                bands={n: summaries[n]["per_epoch_accuracy"]["sem"] for n in names})
    return write_json(summaries, out / "compare_init.json")
