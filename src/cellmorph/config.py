"""Run configuration (pydantic): one file describes a run and is saved with its outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cellmorph.atomic import write_text
from cellmorph.errors import CellmorphError
from cellmorph.training.augment import AugmentConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class PreprocessConfig(_Strict):
    """Field of view -> uint8 tiles at the model's input size."""

    illumination: bool = Field(True, description="Singh et al. 2014 correction per plate/channel")
    illumination_window: float = Field(0.4, gt=0, le=1, description="median width / shorter side")
    anscombe: bool = False
    control_normalise: bool = Field(False, description="subtract DMSO mean, divide by DMSO std")
    rescale: Literal["image", "plate"] = Field(
        "plate", description="image: min-max of each image; plate: per-channel plate percentiles")
    rescale_percentiles: tuple[float, float] = (0.1, 99.9)
    resize: tuple[int, int] | None = Field(None, description="resize whole fields first (H, W)")
    tiles: Literal["grid", "random"] = "grid"
    grid: tuple[int, int] = (2, 2)
    random_count: int = Field(8, ge=1)
    random_size: tuple[int, int] = (256, 256)
    tile_size: int | None = Field(None, ge=16, description="tile edge fed to the model "
                                  "(default: the model's input size)")
    drop_empty: bool = True
    empty_threshold: int = Field(50, ge=0, le=255)
    empty_min_fraction: float = Field(0.002, ge=0, le=1)
    seed: int = 0


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
    """A preset name, a dict or a config -> a config."""
    if isinstance(value, PreprocessConfig):
        return value
    if isinstance(value, str):
        if value not in PREPROCESS_PRESETS:
            raise CellmorphError(f"unknown preprocessing preset {value!r}; choose from "
                                 f"{sorted(PREPROCESS_PRESETS)}")
        return PREPROCESS_PRESETS[value]
    return PreprocessConfig(**value)


class ProfileConfig(_Strict):
    """``cellmorph profile``: images -> deep-feature profiles."""

    index: Path
    output: Path
    cache_dir: Path | None = Field(None, description="tile cache (default OUTPUT/cache)")
    model: str = "tf_efficientnet_lite0"
    weights: str = "imagenet"
    channel_mode: Literal["greyscale", "rgb"] = "greyscale"
    rgb_map: dict[str, Literal["R", "G", "B"]] = Field(
        default_factory=lambda: {"DAPI": "R", "Tubulin": "G", "Actin": "B"},
        description="stain -> colour for rgb mode (stains sharing a colour are averaged)")
    preprocess: PreprocessConfig | str = "pawlowski"
    aggregate: Literal["mean", "median"] = "mean"
    batch_size: int = Field(64, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"
    channels_last: bool = True
    seed: int = 0

    @model_validator(mode="after")
    def _preset(self) -> ProfileConfig:
        self.preprocess = resolve_preprocess(self.preprocess)
        return self


class EvaluateConfig(_Strict):
    """``cellmorph evaluate``: profiles -> NSC/NSCB 1-NN accuracy and mAP."""

    normalize: Literal["none", "standardize", "robust"] = "standardize"
    normalize_by: Literal["plate", "global", "plate-center"] = "plate-center"
    sphering: bool = Field(False, description="TVN: PCA whitening fitted on DMSO wells")
    sphering_epsilon: float = Field(1.0, gt=0, description="added to the control variances")
    pca_components: int | None = Field(None, ge=1)
    aggregate: Literal["mean", "median"] = "mean"
    metrics: list[Literal["cosine", "euclidean"]] = ["cosine", "euclidean"]
    map: bool = True
    map_null_size: int = Field(10000, ge=100)
    map_threshold: float = 0.05
    drop_nan_rows: bool = Field(False, description="drop wells with missing features "
                                "instead of stopping")
    seed: int = 0


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


class TrainConfig(_Strict):
    """``cellmorph train``: fine-tuning with cross-validation (LOCO by default)."""

    index: Path
    output: Path
    cache_dir: Path | None = Field(None, description="tile cache (default OUTPUT/cache)")
    model: str = "resnet50"
    weights: str = Field("imagenet", description="imagenet, xavier, random or a weights file")
    preprocess: PreprocessConfig | str = "kensert"
    rgb_map: dict[str, Literal["R", "G", "B"]] = Field(
        default_factory=lambda: {"DAPI": "R", "Tubulin": "G", "Actin": "B"},
        description="stain -> input colour; colours no stain maps to stay zero")
    preset: Literal["paper", "fast"] = "paper"
    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    class_balanced: bool | None = None
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    fold_by: str = Field("Metadata_Compound", description="one fold per value: LOCO by "
                         "default; Metadata_CellLine for BBBC021's leave-one-cell-line-out")
    folds: list[str] | None = Field(None, description="run only these folds")
    report_level: Literal["treatment", "well", "image"] = "treatment"
    seeds: list[int] = Field([0], min_length=1, description="one replicate run per seed")
    freeze_stages: int = Field(0, ge=0, description="stages kept frozen (trunk)")
    cached_trunk: bool = Field(False, description="compute the frozen trunk once for all "
                               "folds (needs freeze_stages > 0, dihedral-only augmentation)")
    trunk_cache_dtype: Literal["float16", "float32"] = "float16"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"
    channels_last: bool = True
    compile: bool = False
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _checks(self) -> TrainConfig:
        self.preprocess = resolve_preprocess(self.preprocess)
        if self.cached_trunk and self.freeze_stages == 0:
            raise ValueError("cached_trunk needs freeze_stages > 0")
        if self.cached_trunk and not self.augment.dihedral_only:
            raise ValueError("cached_trunk reproduces dihedral augmentation only; set "
                             "augment.intensity/blur/noise to 0")
        return self

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


def first_error(exc: ValidationError) -> str:
    """The first validation problem as ``field.path: message``."""
    first = exc.errors()[0]
    return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"


def load_config(path: Path | str, model: type[BaseModel]) -> BaseModel:
    """Read a YAML/JSON config file into ``model``; one clear error on a bad file."""
    path = Path(path)
    if not path.is_file():
        raise CellmorphError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return model(**data)
    except yaml.YAMLError as exc:
        raise CellmorphError(f"{path}: not valid YAML ({exc})") from exc
    except ValidationError as exc:
        raise CellmorphError(f"{path}: {first_error(exc)}") from exc


def save_config(config: BaseModel, path: Path | str) -> Path:
    """Write a config as YAML next to a run's outputs (atomically)."""
    data = config.model_dump(mode="json")
    return write_text("# cellmorph run configuration\n" + yaml.safe_dump(data, sort_keys=False),
                      path)
