"""Weak labels: a network trained on the screen itself, with the compound or treatment as its
label (no MoA label is read), as DeepProfiler and WS-DINO train; its penultimate layer is the
product (``cellmorph embed`` turns it into profiles). And the other way round: the models a
run leaves behind, found for embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cellmorph.config import TrainConfig, load_config
from cellmorph.datasets.index import read_index
from cellmorph.errors import CellmorphError
from cellmorph.records import ShortRepr
from cellmorph.runs import run_kind
from cellmorph.training.fold_jobs import WEAK_FOLD, TrainingRun, fold_dir
from cellmorph.training.folds import make_folds

MODEL_FILE = "model.safetensors"


@dataclass(repr=False)
class WeakTrainingResult(ShortRepr):
    """What a weakly supervised run made: one model per seed, and how its training went."""

    config: TrainConfig
    classes: list[str]  # the compounds or treatments it tells apart
    crops: int  # trainable crops (each epoch draws as many)
    plates: int
    models: dict[int, Path] = field(default_factory=dict)  # seed -> weights file
    train_loss: dict[int, list[float]] = field(default_factory=dict)  # seed -> per epoch
    trained: str = ""
    runtime: dict[str, str | bool] = field(default_factory=dict)
    synthetic: bool = False  # made from SYNTHETIC images

    def as_json(self) -> dict:
        """What ``training.json`` holds (paths relative to the run folder)."""
        out = Path(self.config.output).absolute()  # the run's own paths are absolute
        return {"label": self.config.label, "controls": self.config.controls,
                "sampling": self.config.sampling, "classes": self.classes,
                "crops": self.crops, "plates": self.plates, "trained": self.trained,
                "models": {str(s): str(p.absolute().relative_to(out))
                           for s, p in self.models.items()},
                "train_loss": {str(s): v for s, v in self.train_loss.items()},
                "runtime": self.runtime, "synthetic": self.synthetic}


def summarise_weak(run: TrainingRun) -> WeakTrainingResult:
    """The result of a weakly supervised :class:`TrainingRun` (one fold per seed)."""
    result = WeakTrainingResult(run.config, run.classes, run.rows, run.plates,
                                trained=run.trained, runtime=run.runtime,
                                synthetic=run.synthetic)
    for seed in run.seeds:
        result.models[seed.seed] = fold_dir(seed.folder, WEAK_FOLD) / MODEL_FILE
        result.train_loss[seed.seed] = seed.folds[0].train_loss
    return result


@dataclass(frozen=True)
class RunModels:
    """The trained models of one seed of a run, as ``cellmorph embed`` uses them."""

    config: TrainConfig
    seed: int
    weights: Path  # the weak model, or the first fold's (it embeds rows of no fold)
    fold_models: dict[str, Path] | None = None  # LOCO: held-out value -> its fold's model


def run_models(folder: Path | str, seed: int | None = None) -> RunModels:
    """The models a finished training run left for ``seed`` (default its first); one clear
    error when the run is unfinished or kept no models."""
    folder = Path(folder)
    kind = run_kind(folder)
    if kind != "train":
        found = f"a {kind} run" if kind else "no cellmorph run"
        raise CellmorphError(f"{folder} holds {found}; give the folder `cellmorph train` "
                             "wrote")
    cfg = load_config(folder / "config.yaml", TrainConfig)
    seed = cfg.seeds[0] if seed is None else seed
    if seed not in cfg.seeds:
        raise CellmorphError(f"--seed {seed}: the run trained seeds {cfg.seeds}")
    seed_folder = folder / f"seed{seed}"
    names = ([WEAK_FOLD] if cfg.weak_label  # the folds a LOCO run must have trained
             else [f.name for f in make_folds(read_index(cfg.index), by=cfg.fold_by)])
    models = {name: fold_dir(seed_folder, name) / MODEL_FILE for name in names}
    missing = [name for name, path in models.items() if not path.is_file()]
    if missing:
        how = ("train it first" if cfg.weak_label else
               "every fold must be trained (all folds, not --fold) with its model kept "
               "(keep_models: embed for the first seed, all for the others)")
        raise CellmorphError(f"{folder}: seed {seed} has no model for fold(s) "
                             f"{missing[:3]}{' ...' if len(missing) > 3 else ''}; {how}")
    first = models[names[0]]
    return RunModels(cfg, seed, first, None if cfg.weak_label else models)
