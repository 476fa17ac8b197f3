"""``cellmorph demo``: the whole pipeline on a small SYNTHETIC BBBC021 set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cellmorph import api
from cellmorph.atomic import write_parquet
from cellmorph.config import PREPROCESS_PRESETS, EvaluateConfig, PreprocessConfig
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.evaluation.cv_scores import CVResult
from cellmorph.evaluation.profiles import EvaluationResult
from cellmorph.log import get_logger
from cellmorph.records import ShortRepr
from cellmorph.synth.bbbc021_synthetic import synthesize_bbbc021

log = get_logger(__name__)
STEPS = 7


@dataclass(repr=False)
class DemoResult(ShortRepr):
    """Where the demo put things, and what it measured."""

    folder: Path
    images: Path
    index: Path
    profiles: Path
    evaluation: EvaluationResult
    training_folder: Path
    training: CVResult
    report: Path


def run_demo(out: Path | str = "demo-output", *, precision: str = "auto",
             progress: bool = True) -> DemoResult:
    """Synthesise, index, profile with ImageNet EfficientNet-Lite0, evaluate, fine-tune over
    two seeds, explain, and write the report (under 3 minutes on 2 cores). ``precision``
    is the networks' (``fp32`` gives the same numbers on any CPU; ``auto`` takes what was
    measured faster: see :data:`cellmorph.runtime.CPU_AUTO`).

    Examples
    --------
    >>> demo = run_demo("demo-output")  # doctest: +SKIP
    >>> demo.report  # doctest: +SKIP
    PosixPath('demo-output/report.html')
    """
    out = Path(out)
    images = out / "synthetic-bbbc021"
    log.info("[1/%d] synthesising a SYNTHETIC BBBC021 set in %s", STEPS, images)
    synthesize_bbbc021(images, progress=progress)
    log.info("[2/%d] indexing it with the MoA benchmark rules", STEPS)
    index = index_bbbc021(images, moa_subset=True)
    index_path = write_parquet(index, out / "index.parquet")
    log.info("%s", api.describe(index))
    log.info("[3/%d] profiling with frozen ImageNet EfficientNet-Lite0 (per stain)", STEPS)
    profiles = out / "profiles"
    # The synthetic fields are small (128x160): one tile per field, resized to the model input.
    profiled = api.profile(index=index_path, output=profiles,
                           preprocess=PreprocessConfig(grid=(1, 1)), precision=precision,
                           keep_cache=False, progress=progress)  # the disk: nothing reads it
    log.info("[4/%d] evaluating: NSC/NSCB 1-NN accuracy and mAP", STEPS)
    evaluation = api.evaluate(profiled, EvaluateConfig(map_null_size=2000),
                              output=profiles / "evaluation")
    log.info("[5/%d] fine-tuning EfficientNet-Lite0 with leave-one-compound-out CV "
             "(short: 2 epochs, 64 px crops, 2 seeds; plus a fold per MoA without it)", STEPS)
    training = out / "loco"
    cv = api.train(index=index_path, output=training, model="tf_efficientnet_lite0",
                   preset="fast", epochs=2, progress=progress, seeds=[0, 1], novelty=True,
                   precision=precision, keep_models="explain",  # one model per MoA: the disk
                   conformal_levels=["treatment", "well"],
                   preprocess=PREPROCESS_PRESETS["kensert"].model_copy(update={"tile_size": 64}))
    log.info("[6/%d] what the network sees: activation maximisation and Grad-CAM", STEPS)
    api.explain(training, output=training / "explain", size=96, steps=64, filters=2,
                progress=progress)
    log.info("[7/%d] writing the report", STEPS)
    page = api.report(out, output=out / "report.html").path
    return DemoResult(out, images, index_path, profiles, evaluation, training, cv, page)
