"""The figures of a result as matplotlib figures: what the writers save as PNG (under these
names) and what a notebook shows (``cellmorph.figures(result)``).

Each builder draws with :mod:`cellmorph.reporting.plots` and keeps the figures in memory;
SYNTHETIC results come back stamped, as their PNGs are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from cellmorph import schema as sc
from cellmorph.reporting.plots import (
    plot_bars,
    plot_confusion,
    plot_coverage,
    plot_curves,
    plot_dose_response,
    plot_potency,
    plot_ranked,
)
from cellmorph.reporting.text import partial_note

# Result types only as annotations: their modules load torch, which a command that runs no
# network (evaluate, export) never needs (tests/test_cli.py checks it).
if TYPE_CHECKING:
    from cellmorph.evaluation.conformal import ConformalResult
    from cellmorph.evaluation.cv_scores import CVResult
    from cellmorph.evaluation.profiles import EvaluationResult
    from cellmorph.evaluation.readout import TranslocationResult
    from cellmorph.training.weak import WeakTrainingResult


def conformal_figure(result: ConformalResult, synthetic: bool = False) -> Figure:
    """Coverage against the confidence asked for, and the set sizes."""
    return plot_coverage(result.validity(), result.efficiency(), None,
                         title=f"conformal prediction: {result.method}", synthetic=synthetic)


def evaluation_figures(result: EvaluationResult) -> dict[str, Figure]:
    """A confusion matrix per hold-out and distance, the mAP plots, the conformal plot."""
    synthetic = sc.is_synthetic(result.wells)
    figures = {f"confusion_{res.holdout}_{res.metric}": plot_confusion(
        result.confusion(res.holdout, res.metric),
        f"{res.holdout.upper()} 1-NN ({res.metric}): {res.accuracy:.1%} of "
        f"{res.n_treatments} treatments", None, synthetic=synthetic) for res in result.nn}
    threshold = result.config.map_threshold
    if result.map_consistency is not None:
        moa = result.map_consistency.sort_values("mean_average_precision", ascending=False)
        figures["map_moa_consistency"] = plot_bars(
            dict(zip(moa[sc.MOA], moa["mean_average_precision"], strict=True)),
            "MoA consistency mAP (copairs): same-MoA treatments of other compounds", "mAP",
            None, threshold=threshold,
            pvalues=dict(zip(moa[sc.MOA], moa["corrected_p_value"], strict=True)),
            synthetic=synthetic)
    if result.map_activity is not None:
        activity = result.map_activity
        figures["map_activity"] = plot_ranked(
            activity["mean_average_precision"].to_numpy(),
            activity["below_corrected_p"].to_numpy(bool),
            "Phenotypic activity mAP (copairs): each treatment's replicates vs DMSO", "mAP",
            None, threshold=threshold, synthetic=synthetic)
    if result.conformal is not None:
        figures["conformal"] = conformal_figure(result.conformal, synthetic)
    if result.potency is not None and len(result.potency):
        from cellmorph.evaluation.activity import DISTANCE_TO_CONTROLS

        figures["potency"] = plot_potency(
            result.activity, result.potency, DISTANCE_TO_CONTROLS, None,
            title="potency: distance to the controls against dose (4PL fit, EC50 and its "
                  "95 % interval)", synthetic=synthetic)
    return figures


def cv_figures(result: CVResult) -> dict[str, Figure]:
    """Each seed's confusion matrix (and well-level conformal plot), the ensemble's
    conformal plot, the accuracy after each epoch."""
    level = result.config.report_level
    synthetic = any(sc.is_synthetic(s.crops) for s in result.seeds)
    partial = partial_note(result.summary)
    figures = {}
    for i, seed in enumerate(result.seeds):
        acc = seed.metrics[f"{level}_accuracy"]
        figures[f"seed{seed.seed}/confusion"] = plot_confusion(
            result.confusion(i), f"{level}-level accuracy {acc:.1%} over "
            f"{len(seed.levels[level])} {level}s{partial}", None, synthetic=synthetic)
        if f"seed{seed.seed}" in result.conformal_well:
            figures[f"seed{seed.seed}/conformal_well"] = conformal_figure(
                result.conformal_well[f"seed{seed.seed}"], synthetic)
    if "ensemble" in result.conformal:
        figures["conformal"] = conformal_figure(result.conformal["ensemble"], synthetic)
    curves = {f"seed {s.seed}": s.per_epoch_accuracy for s in result.seeds}
    figures["accuracy_per_epoch"] = plot_curves(
        curves, f"{level}-level test accuracy per epoch{partial}", "epoch", "accuracy", None,
        chance=1 / max(1, len(result.classes)), synthetic=synthetic)
    return figures


def translocation_figures(result: TranslocationResult) -> dict[str, Figure]:
    """The readout against the dose, per well."""
    from cellmorph.profiling.translocation import RATIO

    return {"translocation_dose_response": plot_dose_response(
        result.wells, RATIO, None, title="nuclear / cytoplasmic reporter intensity per well",
        synthetic=sc.is_synthetic(result.wells))}


def weak_figures(result: WeakTrainingResult) -> dict[str, Figure]:
    """The training loss per epoch of each seed of a weakly supervised run."""
    curves = {f"seed {seed}": losses for seed, losses in result.train_loss.items()}
    return {"training_loss": plot_curves(
        curves, f"weak labels ({result.config.label}): training loss", "epoch",
        "cross-entropy", None, synthetic=result.synthetic)}

