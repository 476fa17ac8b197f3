"""Embedding tiles with a frozen backbone: pooled penultimate features, batched, per stain."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cellmorph.backbones.model_input import InputSpec
from cellmorph.runtime import Runtime, autocast


class TileEmbedder:
    """Maps uint8 tiles (N, C, S, S) to features: rgb (F) or greyscale per stain (C*F).

    In greyscale mode (``spec.mixing`` is None) each stain is embedded alone as a grey image
    and the stains' features are concatenated (Pawlowski et al. 2016).
    """

    def __init__(self, model: nn.Module, spec: InputSpec, runtime: Runtime) -> None:
        self.runtime = runtime
        self.model = model.eval().to(runtime.device)
        if spec.memory_format == torch.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.spec = spec
        self.mode = "greyscale" if spec.mixing is None else "rgb"

    def to_model_input(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, S, S) -> normalised float (N', 3, S, S) (N' = N*C in greyscale mode)."""
        x = tiles.to(self.runtime.device, non_blocking=True)
        if self.mode == "greyscale":
            n, c, h, w = x.shape
            x = x.reshape(n * c, 1, h, w)
        return self.spec(x)

    @torch.inference_mode()
    def forward_input(self, x: torch.Tensor) -> torch.Tensor:
        """The bare model forward pass on prepared input (what benchmarks compare against)."""
        with autocast(self.runtime.device, self.runtime.precision):
            return self.model(x).float()

    @torch.inference_mode()
    def __call__(self, tiles: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Features of all tiles, float32 (N, F) or (N, C*F)."""
        out = []
        n_stains = tiles.shape[1]
        step = max(1, batch_size // (n_stains if self.mode == "greyscale" else 1))
        pin = self.runtime.device.type == "cuda"  # page-locked: the copy overlaps the GPU
        for start in range(0, len(tiles), step):
            batch = torch.from_numpy(np.ascontiguousarray(tiles[start : start + step]))
            if pin:
                batch = batch.pin_memory()
            feats = self.forward_input(self.to_model_input(batch))
            if self.mode == "greyscale":
                feats = feats.reshape(len(batch), -1)
            out.append(feats.cpu().numpy())
        if not out:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(out).astype(np.float32)


def feature_names(n_features: int, channels: Sequence[str], mode: str) -> list[str]:
    """Column names: ``Feature_<stain>_<i>`` (greyscale) or ``Feature_rgb_<i>``."""
    if mode == "rgb":
        return [f"Feature_rgb_{i:04d}" for i in range(n_features)]
    per = n_features // len(channels)
    return [f"Feature_{s}_{i:04d}" for s in channels for i in range(per)]
