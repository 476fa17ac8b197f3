"""Embedding tiles with a frozen backbone: pooled penultimate features, batched, per stain."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cellmorph.errors import CellmorphError

COLOURS = ("R", "G", "B")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = fp32). ``auto``: bf16 on GPUs that have it and on CPUs with
    native bf16 (AVX512-BF16/AMX), else fp32 (emulated bf16 is slower than fp32 on a CPU)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_native_bf16() else None


def autocast(device: torch.device,
             precision: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``precision`` on ``device`` (no-op for fp32 / None)."""
    if precision is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision)


def _cpu_has_native_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def rgb_mixing(channels: Sequence[str], rgb_map: Mapping[str, str]) -> np.ndarray:
    """(3, C) matrix turning C stains into RGB; stains sharing a colour are averaged."""
    mix = np.zeros((3, len(channels)), np.float32)
    for c, stain in enumerate(channels):
        colour = rgb_map.get(stain)
        if colour is None:
            raise CellmorphError(f"rgb mode: stain {stain!r} has no colour in rgb_map "
                                 f"{dict(rgb_map)}; map each stain to R, G or B")
        mix[COLOURS.index(colour), c] = 1.0
    counts = mix.sum(1, keepdims=True)
    return mix / np.maximum(counts, 1.0)


def tiles_to_input(tiles: torch.Tensor, mixing: torch.Tensor | None, mean: torch.Tensor,
                   std: torch.Tensor,
                   memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 or [0, 1] float tiles (N, C, S, S) -> normalised 3-channel model input.

    ``mixing`` (3, C) maps stains to RGB; ``None`` repeats a single stain as grey.
    """
    x = tiles.float().div_(255.0) if tiles.dtype == torch.uint8 else tiles.float()
    if mixing is not None:
        x = torch.einsum("kc,nchw->nkhw", mixing, x)
    else:
        x = x.expand(-1, 3, -1, -1)
    return ((x - mean) / std).contiguous(memory_format=memory_format)


class TileEmbedder:
    """Maps uint8 tiles (N, C, S, S) to features: rgb (F) or greyscale per stain (C*F)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], *,
                 mode: str = "greyscale", mixing: np.ndarray | None = None,
                 device: torch.device | str = "cpu", precision: torch.dtype | None = None,
                 channels_last: bool = True) -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.mode = mode
        self.precision = precision
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.mixing = None if mixing is None else torch.from_numpy(mixing).to(self.device)
        if mode == "rgb" and mixing is None:
            raise ValueError("rgb mode needs a mixing matrix")

    def to_model_input(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, S, S) -> normalised float (N', 3, S, S) (N' = N*C in greyscale mode)."""
        x = tiles.to(self.device, non_blocking=True)
        if self.mode == "greyscale":
            n, c, h, w = x.shape
            x = x.reshape(n * c, 1, h, w)
        return tiles_to_input(x, self.mixing, self.mean, self.std, self.memory_format)

    @torch.inference_mode()
    def forward_input(self, x: torch.Tensor) -> torch.Tensor:
        """The bare model forward pass on prepared input (what benchmarks compare against)."""
        with autocast(self.device, self.precision):
            return self.model(x).float()

    @torch.inference_mode()
    def __call__(self, tiles: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Features of all tiles, float32 (N, F) or (N, C*F)."""
        out = []
        n_stains = tiles.shape[1]
        step = max(1, batch_size // (n_stains if self.mode == "greyscale" else 1))
        for start in range(0, len(tiles), step):
            batch = torch.from_numpy(np.ascontiguousarray(tiles[start : start + step]))
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
