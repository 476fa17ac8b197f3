"""Pretrained vs Xavier initialisation over replicate seeds (Kensert et al. 2019, Fig. 4)."""

from __future__ import annotations

from pathlib import Path

from cellmorph.atomic import write_json
from cellmorph.config import TrainConfig
from cellmorph.report.plots import plot_bars, plot_curves
from cellmorph.training.cv import format_summary, run_cross_validation

INITS = ("imagenet", "xavier")


def compare_initialisations(cfg: TrainConfig, output: Path, *, progress: bool = True) -> dict:
    """Run ``cfg`` with each initialisation (same folds, seeds and budget) and plot both."""
    output = Path(output)
    shared_cache = cfg.cache_dir or output / "cache"
    summaries = {}
    for init in INITS:
        run_cfg = cfg.model_copy(update={"weights": init, "output": output / init,
                                         "cache_dir": shared_cache})
        summaries[init] = run_cross_validation(run_cfg, progress=progress)
    level = cfg.report_level
    key = f"{level}_accuracy"
    plot_bars({i: summaries[i][key]["mean"] for i in INITS},
              f"{cfg.model}: {level} accuracy, mean +- SEM over {len(cfg.seeds)} seed(s)",
              "accuracy", output / "compare_init.png",
              errors={i: summaries[i][key]["sem"] for i in INITS})
    plot_curves({i: summaries[i]["per_epoch_accuracy"]["mean"] for i in INITS},
                f"{cfg.model}: {level} test accuracy per epoch", "epoch", "accuracy",
                output / "compare_init_epochs.png",
                bands={i: summaries[i]["per_epoch_accuracy"]["sem"] for i in INITS})
    write_json(summaries, output / "compare_init.json")
    text = "\n".join(format_summary(summaries[i]) for i in INITS)
    return {"summaries": summaries, "text": text + f"\nplots: {output / 'compare_init.png'}"}
