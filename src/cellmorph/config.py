"""Run configuration (pydantic): one file describes a run and is saved with its outputs.

Every field has a description; ``cellmorph config-reference`` (and ``docs/config.md``) lists
them, and the command line's ``--help`` repeats them for the options it offers.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cellmorph.atomic import write_text
from cellmorph.errors import CellmorphError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Executor = Literal["local", "ray"]
Side = Annotated[int, Field(ge=8)]  # pixels
Confidence = Annotated[float, Field(gt=0, lt=1)]
Percent = Annotated[float, Field(ge=0, le=100)]
Colour = Literal["R", "G", "B"]
ConformalScheme = Literal["auto", "mondrian", "marginal"]
SCHEME_HELP = ("conformal calibration: mondrian (per MoA), marginal (over all MoAs), or auto: "
               "mondrian at a confidence every MoA's calibration set supports, else marginal")


def _not_empty(value: Any) -> Any:
    # pathlib reads "" as the current folder; an empty path is almost always an unset
    # variable in a script, so it is refused rather than filled with a run's files.
    if isinstance(value, str) and not value.strip():
        raise ValueError("an empty path; give a file or folder")
    return value


RunPath = Annotated[Path, BeforeValidator(_not_empty)]
DEFAULT_RGB_MAP: dict[str, Colour] = {"DAPI": "R", "Tubulin": "G", "Actin": "B"}


# British and American spellings of a key are both accepted (users type either); the
# declared one is what a saved config says.
_SPELLINGS = (("normalise", "normalize"), ("colour", "color"))


def _declared_spelling(key: Any, fields: dict, given: dict) -> Any:
    """``key`` as the model declares it, where it is the other spelling of a declared key."""
    if not isinstance(key, str) or key in fields:
        return key
    for a, b in (*_SPELLINGS, *((b, a) for a, b in _SPELLINGS)):
        other = key.replace(a, b)
        if other != key and other in fields and other not in given:
            return other
    return key


class _Strict(BaseModel):
    # Unknown keys are errors (a typo is never silently ignored), and numbers must be finite.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _either_spelling(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {_declared_spelling(key, cls.model_fields, data): v for key, v in data.items()}

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads `epochs: true` as 1 (bool is an int in Python); YAML's yes/no/on/off
        # are booleans too, so a number setting given one is almost always a slip.
        annotation = str(cls.model_fields[info.field_name].annotation)
        if "bool" in annotation or not any(t in annotation for t in ("int", "float")):
            return value
        items = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, bool) for v in items):
            shown = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in items)
            raise ValueError(f"a number is needed, not {shown}")
        return value


class CellsConfig(_Strict):
    """Single-cell crops (``tiles: cells``): where the nuclei are and how each cell is cut out.

    The crop side defaults to 96 pixels, DeepProfiler's ``box_size`` for BBBC021: at its
    resolution an MCF7 nucleus is about 20-30 pixels across and its cell 50-70, so one cell
    and a margin fit. Crops go to the network at their own size (``tile_size`` unset): no
    upsampling invents detail, and 50 crops of 96 pixels cost about what four 299-pixel
    tiles do.
    """

    size: int = Field(96, ge=8, description="crop side in pixels of the field (after any "
                      "resize)")
    edge: Literal["skip", "pad"] = Field("skip", description="cells whose crop leaves the "
                                         "field: skipped, or padded with zeros")
    max_per_field: int | None = Field(50, ge=1, description="at most this many cells a field, "
                                      "drawn at random (seeded) when there are more "
                                      "(DeepProfiler samples 50); none: every cell")
    mask_neighbours: bool = Field(False, description="zero the pixels nearer another cell's "
                                  "centre than this cell's")
    locations: RunPath | None = Field(None, description="CellProfiler per-object table "
                                      "(Nuclei.csv: ImageNumber, ObjectNumber, "
                                      "Location_Center_X/Y); default: find nuclei in the "
                                      "nuclear stain")
    location_images: RunPath | None = Field(None, description="the image table its "
                                            "ImageNumber refers to: CellProfiler's Image.csv, "
                                            "or the LoadData CSV (ImageNumber = row number); "
                                            "not needed when the locations carry "
                                            "Metadata_Plate/Well/Site")
    nuclei_stain: str = Field("DAPI", description="the stain nuclei are found in "
                              "(case-insensitive)")
    smooth: float = Field(2.0, ge=0, description="Gaussian sigma before thresholding, pixels")
    min_area: int = Field(50, ge=1, description="smallest nucleus, pixels (before splitting)")
    max_area: int = Field(4000, ge=1, description="largest nucleus kept, pixels (after "
                          "splitting); larger objects are clumps or debris")
    split_distance: int = Field(7, ge=1, description="touching nuclei are split when their "
                                "centres are at least this far apart, pixels")


class PreprocessConfig(_Strict):
    """Field of view -> uint8 tiles at the model's input size."""

    illumination: bool = Field(True, description="Singh et al. 2014 illumination correction per "
                               "plate and channel")
    illumination_window: float = Field(0.4, gt=0, le=1, description="median filter width as a "
                                       "fraction of the image's shorter side")
    anscombe: bool = Field(False, description="variance-stabilising Anscombe transform")
    control_normalise: bool = Field(False, description="subtract the plate's DMSO mean and "
                                    "divide by its DMSO std, per channel")
    rescale: Literal["image", "plate"] = Field(
        "plate", description="to 8 bits by the min-max of each image (image) or by per-channel "
        "plate percentiles (plate)")
    rescale_percentiles: tuple[Percent, Percent] = Field(
        (0.1, 99.9), description="plate percentiles mapped to 0 and 255 (rescale: plate)")
    resize: tuple[Side, Side] | None = Field(None, description="resize whole fields to (H, W) "
                                             "before tiling")
    tiles: Literal["grid", "random", "cells"] = Field(
        "grid", description="cut fields into a regular grid, at random positions, or into one "
        "crop per cell centred on its nucleus (see cells)")
    grid: tuple[PositiveInt, PositiveInt] = Field((2, 2), description="rows and columns of the "
                                                  "tile grid")
    random_count: int = Field(8, ge=1, description="random tiles per field (tiles: random)")
    random_size: tuple[Side, Side] = Field((256, 256), description="random tile size (H, W)")
    cells: CellsConfig = Field(default_factory=CellsConfig, description="single-cell crops "
                               "(tiles: cells)")
    tile_size: int | None = Field(None, ge=16, description="tile edge fed to the model "
                                  "(default: the model's input size; with tiles: cells the "
                                  "crop size)")
    drop_empty: bool = Field(True, description="drop tiles that are mostly background "
                             "(Kensert et al.)")
    empty_threshold: int = Field(50, ge=0, le=255, description="a pixel counts as foreground "
                                 "above this 8-bit value")
    empty_min_fraction: float = Field(0.002, ge=0, le=1, description="a tile is kept when more "
                                      "than this fraction of its pixels is foreground")
    seed: int = Field(0, description="seed of the random tile positions (each field draws "
                      "from the seed and its place in the plate)")

    @model_validator(mode="after")
    def _ordered(self) -> PreprocessConfig:
        low, high = self.rescale_percentiles
        if low >= high:
            raise ValueError(f"rescale_percentiles {list(self.rescale_percentiles)}: the first "
                             "must be below the second")
        return self

    def input_size(self, model_default: int) -> int:
        """The tile edge the network sees: ``tile_size``, else the cell crop size for
        ``tiles: cells``, else the model's own input size."""
        if self.tile_size is not None:
            return self.tile_size
        return self.cells.size if self.tiles == "cells" else model_default


PREPROCESS_PRESETS: dict[str, PreprocessConfig] = {
    # Pawlowski et al. 2016: illumination-corrected images, features per stain.
    "pawlowski": PreprocessConfig(illumination=True, rescale="plate", grid=(2, 2)),
    # Kensert et al. 2019: Anscombe, DMSO normalisation per plate, each image to 0-255,
    # 2x2 crops (512x640 of 1024x1280), crops with <=0.2 % pixels above 50 dropped.
    "kensert": PreprocessConfig(illumination=False, anscombe=True, control_normalise=True,
                                rescale="image", grid=(2, 2), drop_empty=True),
    # BBBC014 in Kensert et al.: fields resized to 1024x1024, 16 crops of 256x256.
    "kensert-bbbc014": PreprocessConfig(illumination=False, anscombe=True, rescale="image",
                                        resize=(1024, 1024), grid=(4, 4), tile_size=256,
                                        drop_empty=False),
}


def resolve_preprocess(value: str | PreprocessConfig | dict) -> PreprocessConfig:
    """A preset name, settings (a dict, or its JSON/YAML text as the command line passes
    it, e.g. ``{"grid": [1, 1]}``) or a config -> a config."""
    if isinstance(value, PreprocessConfig):
        return value
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise CellmorphError(f"preprocess {value!r}: not a valid JSON/YAML mapping "
                                 f"({exc.__class__.__name__})") from None
    if isinstance(value, str):
        if value not in PREPROCESS_PRESETS:
            raise CellmorphError(f"unknown preprocessing preset {value!r}; choose from "
                                 f"{sorted(PREPROCESS_PRESETS)}, or give settings as "
                                 "JSON, e.g. '{\"grid\": [1, 1]}'")
        return PREPROCESS_PRESETS[value]
    return PreprocessConfig(**value)


class AugmentConfig(_Strict):
    """Which training augmentations are on, and how strong."""

    dihedral: bool = Field(True, description="the 8 rotations/flips")
    intensity: float = Field(0.0, ge=0, description="per-channel gain jitter, +-fraction")
    blur: float = Field(0.0, ge=0, description="max Gaussian sigma in pixels (0 = off)")
    noise: float = Field(0.0, ge=0, description="Gaussian noise std, in units of [0, 1]")

    @property
    def dihedral_only(self) -> bool:
        """True when only rotations/flips are on (what cached-trunk mode can reproduce)."""
        return self.intensity == 0 and self.blur == 0 and self.noise == 0


PREPROCESS_HELP = ("preset (pawlowski, kensert, kensert-bbbc014) or settings, as JSON on "
                   "the command line: '{\"grid\": [1, 1]}'")


class RunConfig(_Strict):
    """What every run that owns a folder (``profile``, ``train``) has in common: its index and
    folder, the network and its weights, the preprocessing, where and how it computes."""

    index: RunPath = Field(description="field-of-view index from `cellmorph index`")
    output: RunPath = Field(description="run folder")
    cache_dir: RunPath | None = Field(None, description="tile cache (default OUTPUT/cache); runs "
                                                    "of the same screen can share one")
    model: str = Field(description="any timm model name")
    weights: str = Field("imagenet", description="imagenet, xavier, random or a weights file")
    preprocess: PreprocessConfig | str = Field(description=PREPROCESS_HELP)
    rgb_map: dict[str, Colour] = Field(
        default_factory=lambda: dict(DEFAULT_RGB_MAP),
        description="stain -> input colour (case-insensitive; stains sharing a colour are "
        "averaged, colours no stain maps to stay zero)")
    precision: Precision = Field(
        "auto", description="auto, fp32, bf16, fp16; auto takes what was measured faster for "
        "the run (bench/precision.py): bf16 on a GPU; on a CPU with native bf16, bf16 except "
        "to train networks with depthwise convolutions; else fp32; the run record says what "
        "it chose and why")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 ...")
    channels_last: bool = Field(True, description="channels-last memory format (faster on "
                                "most hardware)")
    executor: Executor = Field("local", description="local or ray")
    ray_address: str | None = Field(None, description="Ray cluster to use (auto: the one `ray "
                                    "start` runs here; ray://HOST:10001); default: start a "
                                    "local Ray")

    @model_validator(mode="after")
    def _preset(self) -> RunConfig:
        self.preprocess = resolve_preprocess(self.preprocess)
        return self


RunConfigT = TypeVar("RunConfigT", bound=RunConfig)


class QCConfig(_Strict):
    """Field quality control (``qc:``): which flagged fields to leave out, and how far from
    its plate a field must be to be flagged (see :mod:`cellmorph.profiling.qc`)."""

    drop: list[Literal["blur", "saturation", "empty"]] = Field(
        [], description="fields flagged for these reasons are left out of the well "
        "profiles (counted in qc.parquet, the text and the report); changes results")
    threshold: float = Field(3.5, gt=0, description="robust SDs from the plate's median "
                             "that flag a field")


class ProfileConfig(RunConfig):
    """``cellmorph profile``: images -> deep-feature profiles."""

    model: str = Field("tf_efficientnet_lite0", description="any timm model name")
    channel_mode: Literal["greyscale", "rgb"] = Field(
        "greyscale", description="greyscale: each stain alone, features concatenated; rgb: "
        "stains mapped to colours (rgb_map)")
    preprocess: PreprocessConfig | str = Field("pawlowski", description=PREPROCESS_HELP)
    aggregate: Literal["mean", "median"] = Field("mean", description="tile -> image -> well -> "
                                                 "treatment aggregation")
    qc: QCConfig = Field(default_factory=QCConfig, description="field quality control: "
                         "every field is measured and flagged; drop: which flags leave it out")
    batch_size: int = Field(64, ge=1, description="images per forward pass")
    keep_cache: bool = Field(True, description="keep the run's own tile cache once every "
                             "plate is profiled (false: it is deleted then; a rerun resumes "
                             "from the per-plate results, and a cache_dir elsewhere is never "
                             "deleted); changes no result")
    preprocess_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="processes decoding and preprocessing plates while the network "
        "embeds finished ones; auto: all cores but one beside a GPU, none on a CPU")
    fold_batchnorm: bool = Field(
        True, description="fold each BatchNorm into the convolution before it: the same "
        "features up to float rounding, 1.3-1.9x faster on a CPU")
    executor: Executor = Field("local", description="local: plates one after the other here; "
                               "ray: plates on a Ray actor pool (pip install 'cellmorph[ray]')")
    seed: int = Field(0, description="seed for random weights")
    fold_models: dict[str, RunPath] | None = Field(
        None, description="a leave-one-out run's fold models (`cellmorph embed` writes this): "
        "value of fold_by -> weights file of the model that never saw it; those rows are "
        "embedded by it, every other row (controls, unlabelled) by weights; each model's "
        "features are centred on the controls it embedded on the same plate and scaled by "
        "their spread")
    fold_by: str = Field("Metadata_Compound", description="the column fold_models are keyed "
                         "by")


class EvaluateConfig(_Strict):
    """``cellmorph evaluate``: profiles -> NSC/NSCB 1-NN accuracy and mAP."""

    normalize: Literal["none", "standardize", "robust"] = Field(
        "standardize", description="against DMSO wells: mean/std (standardize), median/MAD "
        "(robust) or none")
    normalize_by: Literal["plate", "global", "plate-center"] = Field(
        "plate-center", description="per plate, over all plates, or centred per plate and "
        "scaled by the pooled DMSO spread")
    sphering: bool = Field(False, description="TVN: PCA whitening fitted on DMSO wells")
    sphering_epsilon: float = Field(1.0, gt=0, description="added to the control variances")
    pca_components: int | None = Field(None, ge=1, description="PCA components fitted on DMSO "
                                       "wells (none: keep all features)")
    aggregate: Literal["mean", "median"] = Field("mean", description="well -> treatment "
                                                 "aggregation")
    metrics: list[Literal["cosine", "euclidean"]] = Field(["cosine", "euclidean"],
                                                          description="1-NN distances")
    map: bool = Field(True, description="mAP via copairs (activity and MoA consistency)")
    map_null_size: int = Field(10000, ge=100, description="permutations for mAP p-values")
    map_threshold: float = Field(0.05, description="corrected p-value for 'retrieved'")
    drop_nan_rows: bool = Field(False, description="drop wells with missing features "
                                "instead of stopping")
    conformal: bool = Field(True, description="conformal nearest-neighbour prediction sets "
                            "of the treatments (NSC)")
    confidences: list[Confidence] = Field([0.8, 0.9, 0.95], min_length=1,
                                          description="confidence levels of the conformal "
                                          "prediction sets")
    conformal_scheme: ConformalScheme = Field("auto", description=SCHEME_HELP)
    novelty: bool = Field(True, description="leave-one-MoA-out: how often conformal sets say "
                          "'none of these' for a MoA removed from the references, and the "
                          "AUROC of the novelty score")
    novelty_confidence: Confidence = Field(0.9, description="confidence of the sets whose "
                                           "emptiness flags an unseen MoA")
    positive_controls: list[str] = Field([], description="compounds whose wells are the "
                                         "screen's positive controls: Z' of their distance "
                                         "to the controls against DMSO's, per plate and "
                                         "overall (plate views)")
    potency: bool = Field(True, description="a four-parameter logistic of each compound's "
                          "distance to the controls against its dose (4 doses or more): EC50, "
                          "its bootstrap interval, flat and failed curves flagged")
    potency_bootstrap: int = Field(100, ge=10, description="bootstrap replicates of each "
                                   "EC50's interval (time grows with them)")
    seed: int = Field(0, description="seed of the mAP permutations, PCA, conformal "
                      "tie-breaking and the potency bootstrap")


@dataclass
class Hyper:
    """Optimisation settings of one training run (see the presets in cellmorph.config)."""

    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    batch_size: int
    epochs: int
    schedule: str
    label_smoothing: float
    class_balanced: bool


class TrainConfig(RunConfig):
    """``cellmorph train``: fine-tuning with cross-validation (LOCO by default)."""

    model: str = Field("resnet50", description="any timm model name")
    preprocess: PreprocessConfig | str = Field("kensert", description=PREPROCESS_HELP)
    preset: Literal["paper", "fast"] = Field(
        "paper", description="paper: SGD, lr 1e-4, batch 8, 10 epochs; fast: AdamW, cosine, "
        "batch 32, 5 epochs")
    epochs: int | None = Field(None, ge=1, description="training epochs (default: the "
                               "preset's)")
    batch_size: int | None = Field(None, ge=1, description="crops per step (default: the "
                                   "preset's)")
    lr: float | None = Field(None, gt=0, description="learning rate (default: the preset's)")
    weight_decay: float | None = Field(None, ge=0, description="weight decay (default: the "
                                       "preset's)")
    label_smoothing: float | None = Field(None, ge=0, lt=1, description="label smoothing "
                                          "(default: the preset's)")
    class_balanced: bool | None = Field(None, description="class-weighted loss (default: the "
                                        "preset's)")
    augment: AugmentConfig = Field(default_factory=AugmentConfig,
                                   description="training augmentation")
    label: Literal["moa", "compound", "treatment"] = Field(
        "moa", description="what the network learns to tell apart: moa (cross-validated, "
        "scored); compound or treatment (weak labels: every treated well trains, no MoA is "
        "read, one model per seed, no folds; its embeddings are the product: `cellmorph "
        "embed`)")
    controls: Literal["exclude", "class"] = Field(
        "exclude", description="with a weak label: the controls (DMSO) left out, or one more "
        "class")
    sampling: Literal["auto", "shuffle", "plate-balanced"] = Field(
        "auto", description="the crops of an epoch: shuffle (each once), or plate-balanced "
        "(drawn with replacement so that every label weighs the same and, within a label, "
        "every plate: a network cannot win by learning one plate's look); auto: "
        "plate-balanced with a weak label, shuffle with moa")
    fold_by: str = Field("Metadata_Compound", description="one fold per value: LOCO by "
                         "default; Metadata_CellLine for BBBC014's leave-one-cell-line-out")
    folds: list[str] | None = Field(None, description="run only these folds (default: all)")
    report_level: Literal["treatment", "well", "image"] = Field(
        "treatment", description="level of the headline accuracy and confusion matrix")
    confidences: list[Confidence] = Field([0.8, 0.9, 0.95], min_length=1,
                                          description="confidence levels of the conformal "
                                          "prediction sets (treatment level)")
    conformal_scheme: ConformalScheme = Field("auto", description=SCHEME_HELP)
    conformal_levels: list[Literal["treatment", "well"]] = Field(
        ["treatment"], min_length=1, description="levels calibrated: treatment (a set per "
        "treatment) and/or well (a set per well: three times the calibration points, coverage "
        "per well)")
    novelty: bool = Field(False, description="also train one fold per MoA without it (first "
                          "seed; one extra fold per MoA) and write the leave-one-MoA-out "
                          "novelty table; needs fold_by Metadata_Compound")
    novelty_confidence: Confidence = Field(0.9, description="confidence of the sets whose "
                                           "emptiness flags an unseen MoA")
    refit: bool = Field(False, description="after the folds, train one more model per seed "
                        "on every labelled compound (the same settings and epochs), the usual "
                        "cross-validate-then-refit: it calls the unlabelled compounds (and "
                        "`cellmorph predict`'s new ones) instead of the fold models' median; "
                        "the sets stay calibrated on the folds' out-of-fold predictions. "
                        "Changes the calls only: a finished run resumes with it turned on")
    seeds: list[int] = Field([0], min_length=1, description="one replicate run per seed")
    keep_models: Literal["embed", "explain", "all", "none"] = Field(
        "embed", description="which fold models to keep (each the size of the network): "
        "embed: the first seed's, which `cellmorph embed` and `cellmorph explain` read; "
        "explain: the first seed's first fold of each MoA, all `cellmorph explain` needs "
        "(in float16: models to look at); "
        "all; none (resuming needs none of them); a weakly supervised run keeps every seed's")
    freeze_stages: Annotated[int, Field(ge=0)] | Literal["all"] = Field(
        0, description="stages kept frozen (stem + first N stages); all: the whole network "
        "but the classifier (a linear probe on pooled features)")
    cached_trunk: bool = Field(False, description="compute the frozen trunk once for all "
                               "folds (needs freeze_stages > 0, dihedral-only augmentation)")
    trunk_cache_dtype: Literal["float16", "float32"] = Field(
        "float16", description="storage type of the cached trunk activations")
    compile: bool = Field(False, description="torch.compile the trained part")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    executor: Executor = Field("local", description="local: folds one after the other here; "
                               "ray: every fold of every seed a Ray task, one GPU each where "
                               "there are GPUs (pip install 'cellmorph[ray]')")

    @model_validator(mode="after")
    def _checks(self) -> TrainConfig:
        if self.cached_trunk and self.freeze_stages == 0:
            raise ValueError("cached_trunk needs freeze_stages > 0")
        if self.cached_trunk and not self.augment.dihedral_only:
            raise ValueError("cached_trunk reproduces dihedral augmentation only; set "
                             "augment.intensity/blur/noise to 0")
        if self.sampling == "auto":  # recorded as resolved, in the config saved with a run
            self.sampling = "shuffle" if self.label == "moa" else "plate-balanced"
        if self.weak_label and self.novelty:
            raise ValueError(f"novelty needs MoA labels; with label: {self.label} there are "
                             "none to leave out (set novelty: false)")
        if self.novelty and self.fold_by != "Metadata_Compound":
            raise ValueError("novelty scores the known MoAs with leave-one-compound-out folds: "
                             "set fold_by: Metadata_Compound (the run adds one leave-one-MoA-"
                             "out fold per MoA itself)")
        return self

    @property
    def weak_label(self) -> bool:
        """True when the run learns compounds or treatments, not MoAs."""
        return self.label != "moa"

    def hyper(self) -> Hyper:
        """The optimisation settings: the preset, with any explicit field on top."""
        base = dict(TRAIN_PRESETS[self.preset])
        for key in ("epochs", "batch_size", "lr", "weight_decay", "label_smoothing",
                    "class_balanced"):
            if getattr(self, key) is not None:
                base[key] = getattr(self, key)
        return Hyper(**base)


TRAIN_PRESETS: dict[str, dict] = {
    # Kensert et al. 2019: SGD with momentum, lr 1e-4, batch 8, 10 epochs, balanced loss.
    "paper": dict(optimizer="sgd", lr=1e-4, weight_decay=0.0, momentum=0.9, batch_size=8,
                  epochs=10, schedule="constant", label_smoothing=0.0, class_balanced=True),
    # What converges faster today: AdamW, cosine decay, larger batches, label smoothing.
    "fast": dict(optimizer="adamw", lr=1e-3, weight_decay=0.05, momentum=0.9, batch_size=32,
                 epochs=5, schedule="cosine", label_smoothing=0.1, class_balanced=True),
}

CONFIG_MODELS: dict[str, type[BaseModel]] = {
    "profile": ProfileConfig, "evaluate": EvaluateConfig, "train": TrainConfig,
    "preprocess": PreprocessConfig, "cells": CellsConfig, "augment": AugmentConfig,
    "qc": QCConfig,
}
# pydantic's names of union members, never YAML keys: models, plain and constrained types.
_MODEL_NAMES = {m.__name__ for m in CONFIG_MODELS.values()} | {
    "str", "int", "float", "bool", "constrained-int", "constrained-float"}


def _all_keys(model: type[BaseModel] = _Strict) -> set[str]:
    """Every key of every config model (for suggestions)."""
    keys: set[str] = set()
    for sub in model.__subclasses__():
        keys |= set(sub.model_fields) | _all_keys(sub)
    return keys


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def first_error(exc: ValidationError) -> str:
    """The first validation problem as ``field.path: message`` (the YAML keys only: pydantic's
    names of union members and validators are left out)."""
    errors = exc.errors()
    # A preset name that fails is less telling than the settings that failed.
    first = next((e for e in errors if "str" not in map(str, e["loc"])), errors[0])
    keys = [str(k) for k in first["loc"]
            if not any(ch in str(k) for ch in "[(") and str(k) not in _MODEL_NAMES]
    where = ".".join(keys)
    # A validator's own ValueError reads as its message, without pydantic's "Value error, ".
    msg = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
    if first["type"] == "extra_forbidden" and keys:
        msg = f"not a setting{did_you_mean(keys[-1], _all_keys())}"
    return f"{where}: {msg}" if where else msg


def load_config(path: Path | str, model: type[BaseModel]) -> BaseModel:
    """Read a YAML/JSON config file into ``model``; one clear error on a bad file."""
    path = Path(path)
    if not path.is_file():
        raise CellmorphError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CellmorphError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise CellmorphError(f"{path}: the top level must be a mapping of settings (key: value), "
                             f"not a {type(data).__name__}")
    return build_config(model, data, source=str(path))


def build_config(model: type[BaseModel], data: dict[str, Any], source: str = "config") -> Any:
    """Validate ``data`` into ``model``; one clear error naming the setting."""
    try:
        return model(**data)
    except ValidationError as exc:
        raise CellmorphError(f"{source}: {first_error(exc)}") from None


def with_absolute_paths(config: RunConfigT) -> RunConfigT:
    """``config`` with every path in it made absolute (against the current folder), as a run
    saves it: the saved ``config.yaml`` then reruns the same run from any folder."""
    def absolute(path: Path | str | None) -> Path | None:
        return None if path is None else Path(path).absolute()

    cells = config.preprocess.cells
    update: dict[str, Any] = {
        "index": absolute(config.index), "output": absolute(config.output),
        "cache_dir": absolute(config.cache_dir),
        "preprocess": config.preprocess.model_copy(update={"cells": cells.model_copy(update={
            "locations": absolute(cells.locations),
            "location_images": absolute(cells.location_images)})})}
    if Path(config.weights).is_file():  # imagenet, xavier and random are names, not files
        update["weights"] = str(Path(config.weights).absolute())
    if getattr(config, "fold_models", None):
        update["fold_models"] = {k: absolute(v) for k, v in config.fold_models.items()}
    return config.model_copy(update=update)


def save_config(config: BaseModel, path: Path | str, *, notes: Sequence[str] = ()) -> Path:
    """Write a config as YAML next to a run's outputs (atomically), ``notes`` as comments
    after its first line; a file that already says the same is left as it is (it may be the
    very file the run was started from)."""
    path, text = Path(path), config_yaml(config, notes)
    if path.is_file() and path.read_text(errors="replace") == text:
        return path
    return write_text(text, path)


def config_yaml(config: BaseModel, notes: Sequence[str] = ()) -> str:
    """The YAML text of a config, as saved with a run (``notes`` as comment lines)."""
    data = config.model_dump(mode="json")
    header = "".join(f"# {note}\n" for note in ["cellmorph run configuration", *notes])
    return header + yaml.safe_dump(data, sort_keys=False)


def field_help(model: type[BaseModel], name: str) -> str:
    """A field's description and default, for the command line's ``--help``."""
    field = model.model_fields[name]
    default = field.get_default(call_default_factory=True)
    if field.is_required():
        shown = " [required, here or in the config file]"
    elif default is None:
        shown = ""
    else:
        shown = f" [default: {default}]"
    return f"{field.description or ''}{shown}"


def reference_markdown() -> str:
    """The configuration reference: every key of every config file, with its description."""
    lines = ["# Configuration reference", "",
             "Generated by `cellmorph config-reference`; every key of a run's YAML file.", ""]
    for name, model in CONFIG_MODELS.items():
        lines += [f"## {name}: `{model.__name__}`", "", (model.__doc__ or "").strip(), "",
                  "| key | default | description |", "|---|---|---|"]
        for key, field in model.model_fields.items():
            default = ("required" if field.is_required()
                       else repr(field.get_default(call_default_factory=True)))
            if len(default) > 40:
                default = ("(see below)" if key in ("augment", "cells", "qc")
                           else default[:37] + "...")
            lines.append(f"| `{key}` | `{default}` | {field.description or ''} |")
        lines.append("")
    lines += ["## Presets", "", "Preprocessing (`preprocess: NAME`):", ""]
    for name, preset in PREPROCESS_PRESETS.items():
        changed = {k: v for k, v in preset.model_dump().items()
                   if v != PreprocessConfig.model_fields[k].default}
        lines.append(f"- `{name}`: {changed}")
    lines += ["", "Training (`preset: NAME`):", ""]
    for name, hyper in TRAIN_PRESETS.items():
        lines.append(f"- `{name}`: {hyper}")
    return "\n".join(lines) + "\n"
