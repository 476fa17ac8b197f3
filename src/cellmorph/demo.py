"""``cellmorph demo``: the whole pipeline on a small SYNTHETIC BBBC021 set."""

from __future__ import annotations

from pathlib import Path

import typer

from cellmorph.atomic import write_parquet
from cellmorph.config import (
    PREPROCESS_PRESETS,
    EvaluateConfig,
    PreprocessConfig,
    ProfileConfig,
    TrainConfig,
)
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.datasets.index import format_summary, summarize
from cellmorph.evaluation.pipeline import evaluate_profiles, format_results
from cellmorph.profiling.cellprofiler import read_profiles
from cellmorph.profiling.pipeline import profile_screen
from cellmorph.synth.bbbc021 import synthesize_bbbc021
from cellmorph.training.cv import format_summary as format_cv
from cellmorph.training.cv import run_cross_validation

STEPS = 5


def run_demo(out: Path) -> dict[str, Path]:
    """Synthesise, index, profile with ImageNet EfficientNet-Lite0, evaluate; returns paths."""
    out = Path(out)
    images = out / "synthetic-bbbc021"
    typer.echo(f"[1/{STEPS}] synthesising a SYNTHETIC BBBC021 set in {images}")
    synthesize_bbbc021(images)
    typer.echo(f"[2/{STEPS}] indexing it with the MoA benchmark rules")
    index = index_bbbc021(images, moa_subset=True, image_csv=images / "BBBC021_v1_image.csv")
    index_path = write_parquet(index, out / "index.parquet")
    typer.echo(format_summary(summarize(index)))
    typer.echo(f"[3/{STEPS}] profiling with frozen ImageNet EfficientNet-Lite0 (per stain)")
    profiles = out / "profiles"
    # The synthetic fields are small (128x160): one tile per field, resized to the model input.
    paths = profile_screen(ProfileConfig(index=index_path, output=profiles,
                                         preprocess=PreprocessConfig(grid=(1, 1))))
    typer.echo(f"[4/{STEPS}] evaluating: NSC/NSCB 1-NN accuracy and mAP")
    results = evaluate_profiles(read_profiles(paths["wells"]), EvaluateConfig(map_null_size=2000),
                                profiles / "evaluation")
    typer.echo(format_results(results))
    typer.echo(f"[5/{STEPS}] fine-tuning EfficientNet-Lite0 with leave-one-compound-out CV "
               "(short: 2 epochs, 64 px crops)")
    training = out / "loco"
    summary = run_cross_validation(TrainConfig(
        index=index_path, output=training, model="tf_efficientnet_lite0", preset="fast",
        epochs=2, preprocess=PREPROCESS_PRESETS["kensert"].model_copy(update={"tile_size": 64})))
    typer.echo(format_cv(summary))
    typer.echo("SYNTHETIC data: these numbers show the pipeline works, not biology.\n"
               f"Plots and tables: {profiles / 'evaluation'} and {training}")
    return {"images": images, "index": index_path, "profiles": profiles, "training": training}
