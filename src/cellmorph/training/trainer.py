"""One fold of fine-tuning: training from the uint8 tile store, test predictions per epoch.

The same loop serves ordinary fine-tuning (tiles -> augmentation -> trunk -> rest) and the
cached-trunk mode (precomputed trunk activations of every crop and dihedral copy -> rest):
both draw batch order and dihedral codes from one seeded generator, so with the same frozen
stages and dihedral-only augmentation they give the same model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset

from cellmorph.backbones.model_input import InputSpec
from cellmorph.cache import TileStore
from cellmorph.config import AugmentConfig, Hyper
from cellmorph.errors import CellmorphError
from cellmorph.log import progress
from cellmorph.runtime import Runtime, autocast
from cellmorph.training.augment import N_DIHEDRAL, dihedral, draw_dihedral, photometric


class TrainingDiverged(CellmorphError):
    """The loss or the predictions of a fold became NaN or infinite."""


class _Batches(Dataset):
    """Whole batches of uint8 tiles from the store (one vectorised read per batch); in
    cached-trunk mode only the indices travel."""

    def __init__(self, store: TileStore | None, positions: np.ndarray) -> None:
        self.store, self.positions = store, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, batch: list[int]):
        idx = torch.as_tensor(batch, dtype=torch.long)
        if self.store is None:
            return idx, torch.empty(0)
        return idx, torch.from_numpy(self.store.take(self.positions[batch]))


@dataclass
class _Step:
    """What one optimisation step uses, shared by a fold's epochs."""

    optimiser: torch.optim.Optimizer
    schedule: object | None  # an LR scheduler, or None for a constant rate
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    labels: torch.Tensor  # class index of every tile in the store
    draw: torch.Tensor | None = None  # draw probability per training position, or a shuffle


class FoldTrainer:
    """Trains ``rest`` (and the trunk unless frozen) on one fold."""

    def __init__(self, model: nn.Module, trunk: nn.Module, rest: nn.Module, spec: InputSpec,
                 hyper: Hyper, augment: AugmentConfig, runtime: Runtime, *,
                 trunk_cache: np.ndarray | None = None, num_workers: int = 0,
                 progress: bool = False) -> None:
        self.model, self.trunk, self.rest = model, trunk, rest
        self.spec, self.hyper, self.augment = spec, hyper, augment
        self.device, self.precision = runtime.device, runtime.precision
        self.trunk_cache = trunk_cache
        self.num_workers = num_workers
        self.progress = progress
        self.trunk_frozen = not any(p.requires_grad for p in trunk.parameters())
        if trunk_cache is not None and not augment.dihedral_only:
            raise ValueError("cached-trunk mode reproduces dihedral augmentation only")

    def _inputs(self, positions: torch.Tensor, tiles: torch.Tensor, k: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
        if self.trunk_cache is not None:
            act = self.trunk_cache[positions.numpy(), k.numpy()]
            return torch.from_numpy(np.ascontiguousarray(act)).to(self.device).float()
        t = dihedral(tiles.to(self.device), k.to(self.device))
        # uint8 tiles go straight into the input spec, which folds the /255 into its one
        # multiply-add; only photometric augmentation needs [0, 1] floats first.
        if not self.augment.dihedral_only:
            t = photometric(t.float().div_(255.0), self.augment, generator)
        x = self.spec(t)
        if self.trunk_frozen:
            with torch.no_grad(), autocast(self.device, self.precision):
                return self.trunk(x).float()
        return self.trunk(x)

    def fit(self, store: TileStore, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
            n_classes: int, seed: int, *, name: str = "",
            draw: np.ndarray | None = None) -> tuple[list[np.ndarray], list[float]]:
        """Train on positions ``train``; returns test probabilities after every epoch and the
        mean training loss of every epoch. ``draw``: a probability per training position; an
        epoch then draws as many crops with replacement (the draw balances the classes, so
        the loss is not class-weighted again). A non-finite loss or prediction stops the fold
        with :class:`TrainingDiverged`."""
        h = self.hyper
        generator = torch.Generator().manual_seed(seed)
        opt, sched = self._optimiser(len(train))
        criterion = self._criterion(labels[train], n_classes, weighted=draw is None)
        # fp16 needs loss scaling against underflow; bf16 and fp32 do not.
        scaler = torch.amp.GradScaler(self.device.type,
                                      enabled=self.precision == torch.float16)
        step = _Step(opt, sched, scaler, criterion, torch.from_numpy(labels).long(),
                     None if draw is None else torch.as_tensor(draw, dtype=torch.float64))
        data = _Batches(None if self.trunk_cache is not None else store, train)
        per_epoch_probs, losses = [], []
        for epoch in progress(range(h.epochs), desc="epochs", leave=False, enabled=self.progress):
            where = f"in fold {name} at epoch {epoch + 1}"
            losses.append(self._train_epoch(data, train, step, generator, where))
            probs = self.predict(store, test)
            if not np.isfinite(probs).all():
                raise TrainingDiverged(f"training diverged {where} (non-finite predictions); "
                                       "lower lr")
            per_epoch_probs.append(probs)
        return per_epoch_probs, losses

    def _optimiser(self, n_train: int) -> tuple[torch.optim.Optimizer, object | None]:
        """The optimiser of the trainable parameters and the learning-rate schedule."""
        h = self.hyper
        params = [p for p in self.model.parameters() if p.requires_grad]
        if h.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=h.lr, weight_decay=h.weight_decay)
        steps = h.epochs * math.ceil(n_train / h.batch_size)
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
                 if h.schedule == "cosine" else None)
        return opt, sched

    def _criterion(self, train_labels: np.ndarray, n_classes: int, *,
                   weighted: bool = True) -> nn.CrossEntropyLoss:
        """Cross-entropy, class-weighted by the training labels' counts if asked."""
        h = self.hyper
        weight = None
        if h.class_balanced and weighted:
            counts = np.bincount(train_labels, minlength=n_classes).astype(np.float64)
            weight = torch.tensor(np.where(counts > 0, counts.sum() / (n_classes * np.maximum(
                counts, 1)), 0.0), dtype=torch.float32, device=self.device)
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=h.label_smoothing)

    def _train_epoch(self, data: _Batches, train: np.ndarray, step: _Step,
                     generator: torch.Generator, where: str) -> float:
        """One pass over the training positions in a fresh order; the mean loss."""
        self.rest.train()
        if not self.trunk_frozen:
            self.trunk.train()
        order = (torch.randperm(len(train), generator=generator) if step.draw is None else
                 torch.multinomial(step.draw, len(train), replacement=True,
                                   generator=generator)).tolist()
        loader = DataLoader(data, batch_size=None,
                            sampler=BatchSampler(order, self.hyper.batch_size, drop_last=False),
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
        total, n = 0.0, 0
        for idx, tiles in loader:
            k = draw_dihedral(len(idx), self.augment, generator)
            positions = torch.from_numpy(train[idx.numpy()])
            x = self._inputs(positions, tiles, k, generator)
            y = step.labels[positions].to(self.device)
            with autocast(self.device, self.precision):
                loss = step.criterion(self.rest(x).float(), y)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"training diverged {where} (loss "
                                       f"{float(loss.detach())}); lower lr")
            step.optimiser.zero_grad(set_to_none=True)
            step.scaler.scale(loss).backward()
            step.scaler.step(step.optimiser)
            step.scaler.update()
            if step.schedule is not None:
                step.schedule.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        return total / max(n, 1)

    @torch.no_grad()
    def predict(self, store: TileStore, positions: np.ndarray, batch: int = 64) -> np.ndarray:
        """Softmax outputs for tiles at ``positions`` (no augmentation)."""
        self.model.eval()
        out = []
        generator = torch.Generator().manual_seed(0)  # unused: no augmentation at test time
        for start in range(0, len(positions), batch):
            pos = positions[start : start + batch]
            k = torch.zeros(len(pos), dtype=torch.long)
            tiles = torch.from_numpy(store.take(pos)) if self.trunk_cache is None else None
            x = self._inputs(torch.from_numpy(pos), tiles, k, generator)
            with autocast(self.device, self.precision):
                out.append(self.rest(x).float().softmax(-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def compute_trunk_cache(trunk: nn.Module, store: TileStore, positions: np.ndarray,
                        spec: InputSpec, runtime: Runtime, path: Path | None = None, *,
                        batch: int = 64, dtype: str = "float16",
                        progress_bar: bool = True) -> np.ndarray:
    """Trunk activations of every tile at ``positions`` and each of its 8 dihedral copies.

    Returns a (N, 8, ...) array indexed by store position (rows not in ``positions`` stay
    zero), memory-mapped at ``path`` when given so it may be larger than RAM. Computed once;
    every fold then trains only the rest of the network from it.
    """
    trunk = trunk.eval().to(runtime.device)
    cache = None
    for start in progress(range(0, len(positions), batch), desc="trunk cache", unit="batch",
                          enabled=progress_bar):
        pos = positions[start : start + batch]
        tiles = torch.from_numpy(store.take(pos)).to(runtime.device)
        for code in range(N_DIHEDRAL):
            k = torch.full((len(pos),), code, dtype=torch.long, device=runtime.device)
            x = spec(dihedral(tiles, k))
            with autocast(runtime.device, runtime.precision):
                act = trunk(x).float()
            if cache is None:
                shape = (len(store), N_DIHEDRAL, *act.shape[1:])
                cache = (np.zeros(shape, dtype) if path is None else
                         np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape))
            cache[pos, code] = act.cpu().numpy().astype(dtype)
    if cache is None:
        raise CellmorphError("no labelled crops to compute the trunk cache from")
    if isinstance(cache, np.memmap):
        cache.flush()
    return cache
