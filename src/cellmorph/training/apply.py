"""A leave-one-out run's fold models applied to another screen (``cellmorph predict``).

Every treated crop of the new screen is predicted by the fold models that never saw its
compound:

- a compound the run never labelled, by every fold model (the calls take their median, as
  the run calls its own unlabelled compounds), or by the refitted model of every labelled
  compound where the run made one (``refit: true``);
- a compound the run was trained on, only by the fold model that held it out, so that its
  probabilities are out-of-fold as the run's own were, and the conformal sets calibrated on
  those hold for it too. A compound that no single fold held out whole (``fold_by`` other
  than the compound) has no such model and is not predicted.

Controls are never predicted. The crops take the run's preprocessing and the very path the
run predicted its own test crops with (:meth:`FoldTrainer.predict`), so that the run's own
screen given here gives the run's own predictions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from cellmorph import schema as sc
from cellmorph.atomic import ensure_writable_dir, write_parquet
from cellmorph.backbones import create_backbone, default_input_size
from cellmorph.backbones.model_input import make_input_spec
from cellmorph.backbones.trunk import split_model
from cellmorph.cache import TileStore, build_tile_cache, safe_name
from cellmorph.config import TrainConfig
from cellmorph.errors import CellmorphError
from cellmorph.log import progress
from cellmorph.runs import RunLayout, start_run
from cellmorph.runtime import Runtime
from cellmorph.training.fold_jobs import REFIT, fold_dir
from cellmorph.training.trainer import FoldTrainer

MODEL_FILE = "model.safetensors"
PREDICTIONS_FOLDER = "predictions"  # each fold model's crop predictions, for resuming


@dataclass(frozen=True)
class FoldModel:
    """One kept fold model of a run and the compounds no part of its training saw."""

    seed: int
    fold: str
    weights: Path
    held_out: frozenset[str]
    refit: bool = False  # trained on every labelled compound: it predicts the unknown ones

    @property
    def stamp(self) -> str:
        """Names this model's predictions: a rewritten weights file gets new ones."""
        stat = self.weights.stat()
        return f"{stat.st_size:x}-{stat.st_mtime_ns:x}"


@dataclass(frozen=True)
class RunModels:
    """A finished leave-one-out run's fold models (every fold of the seeds that kept them)."""

    models: list[FoldModel]
    classes: list[str]
    labelled: frozenset[str]  # every compound the run trained or tested on

    @property
    def refitted(self) -> bool:
        """Whether a refitted model calls the compounds the run never labelled."""
        return any(m.refit for m in self.models)

    def rows_for(self, model: FoldModel, table: pd.DataFrame) -> np.ndarray:
        """Store positions ``model`` predicts (see the module)."""
        compounds = table[sc.COMPOUND].astype(str)
        new = ~compounds.isin(self.labelled)
        if model.refit:
            mine = new
        elif self.refitted:
            mine = compounds.isin(model.held_out)
        else:
            mine = new | compounds.isin(model.held_out)
        return np.flatnonzero((mine & ~sc.is_control(table)).to_numpy())


def run_models(run: Path, cfg: TrainConfig, folds: dict[int, list[str]], folds_total: int,
               classes: Sequence[str]) -> RunModels:
    """The fold models of ``run`` (``folds``: each scored seed's folds), every seed whose
    every fold kept its model; refused, with what to do, where none did."""
    if cfg.weak_label:
        raise CellmorphError(f"{run} is a weakly supervised run: it predicts no MoA; embed "
                             f"it (`cellmorph embed {run}`) and predict from RUN/embed")
    tests = {(seed, fold): _tested_compounds(fold_dir(run / f"seed{seed}", fold))
             for seed, names in folds.items() for fold in names}
    labelled = frozenset(c for found in tests.values() for c in found)
    models = []
    for seed, names in folds.items():
        weights = [fold_dir(run / f"seed{seed}", f) / MODEL_FILE for f in names]
        if len(names) < folds_total or not all(w.is_file() for w in weights):
            continue
        once = Counter(c for f in names for c in tests[seed, f])
        models += [FoldModel(seed, f, w, frozenset(c for c in tests[seed, f] if once[c] == 1))
                   for f, w in zip(names, weights, strict=True)]
        refit = fold_dir(run / f"seed{seed}", REFIT, REFIT) / MODEL_FILE
        if cfg.refit and refit.is_file():
            models.append(FoldModel(seed, REFIT, refit, frozenset(), refit=True))
    if not models:
        raise CellmorphError(
            f"{run}: predict needs the model of every fold of a seed, and no seed kept them "
            f"all (keep_models: {cfg.keep_models}, {len(next(iter(folds.values()), []))} of "
            f"{folds_total} folds done); train every fold with keep_models: embed (a "
            "finished fold does not train again: use a new run folder, or --overwrite)")
    return RunModels(models, list(classes), labelled)


def _tested_compounds(folder: Path) -> set[str]:
    table = pd.read_parquet(folder / "predictions.parquet", columns=[sc.COMPOUND])
    return set(table[sc.COMPOUND].astype(str))


def predict_with(found: RunModels, cfg: TrainConfig, store: TileStore, channels: Sequence[str],
                 runtime: Runtime, folder: Path, *,
                 progress_bars: bool = True) -> list[pd.DataFrame]:
    """Each model's crop predictions on the store (``Prob_<MoA>`` columns, the model in
    ``Metadata_Fold`` and ``Metadata_Seed``), written to ``folder`` as they are made and read
    back on a rerun."""
    out = []
    for model in progress(found.models, desc="fold models", unit="model",
                          enabled=progress_bars):
        path = folder / f"seed{model.seed}" / f"{safe_name(model.fold)}-{model.stamp}.parquet"
        if path.is_file():
            out.append(pd.read_parquet(path))
            continue
        rows = found.rows_for(model, store.table)
        trainer = _trainer(model, cfg, len(found.classes), channels, runtime)
        probs = trainer.predict(store, rows)  # the batches the run tested with
        table = store.table.iloc[rows][sc.metadata_columns(store.table)].reset_index(drop=True)
        table = table.assign(**{sc.FOLD: model.fold, "Metadata_Seed": model.seed})
        values = pd.DataFrame(probs.reshape(len(rows), len(found.classes)),
                              columns=[f"{sc.PROB_PREFIX}{c}" for c in found.classes])
        out.append(pd.concat([table, values], axis=1))
        write_parquet(out[-1], path)
    return out


def _trainer(model: FoldModel, cfg: TrainConfig, n_classes: int, channels: Sequence[str],
             runtime: Runtime) -> FoldTrainer:
    """The fold's network behind the prediction path it was tested with."""
    network = create_backbone(cfg.model, "random", num_classes=n_classes)
    try:
        network.load_state_dict({k: v.float() if v.is_floating_point() else v
                                 for k, v in load_file(str(model.weights)).items()})
    except Exception as exc:  # safetensors and torch raise several types for a bad file
        raise CellmorphError(f"{model.weights}: a damaged model file ({exc}); delete that "
                             "fold's folder and rerun train to redo it") from None
    network.to(runtime.device)
    if cfg.channels_last:
        network.to(memory_format=torch.channels_last)
    trunk, rest = split_model(network, cfg.freeze_stages)
    spec = make_input_spec(network, channels, cfg.rgb_map, runtime.device, cfg.channels_last)
    return FoldTrainer(network, trunk, rest, spec, cfg.hyper(), cfg.augment, runtime)


def predict_screen(cfg: TrainConfig, found: RunModels, *, index_table: pd.DataFrame,
                   overwrite: bool = False, progress_bars: bool = True,
                   finish: Callable[[list[pd.DataFrame]], object] | None = None,
                   outputs: Sequence[str] = ()) -> list[pd.DataFrame]:
    """Preprocess a new screen as the run did (``cfg``: the run's settings, this folder's
    index and output) and predict it with the run's fold models; ``finish`` is called with
    the crop predictions while the folder is held (as :func:`run_folds`'s)."""
    layout = RunLayout(results=(PREDICTIONS_FOLDER, *outputs))
    with start_run(cfg, kind="predict", layout=layout, overwrite=overwrite,
                   index_table=index_table) as started:
        cache = build_tile_cache(started.index, cfg.preprocess, started.folder / "cache",
                                 tile_size=cfg.preprocess.input_size(
                                     default_input_size(cfg.model)),
                                 progress=progress_bars,
                                 device=started.runtime.preprocess_device,
                                 locations=started.cell_locations)
        crops = predict_with(found, cfg, TileStore(cache), cache.channels, started.runtime,
                             ensure_writable_dir(started.folder / PREDICTIONS_FOLDER),
                             progress_bars=progress_bars)
        if finish is not None:
            finish(crops)
    return crops
