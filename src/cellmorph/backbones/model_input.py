"""The model input: how uint8 stain tiles become a network's normalised 3-channel input
(stain-to-RGB mixing, the normalisation its weights expect)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cellmorph.backbones.registry import data_config
from cellmorph.errors import CellmorphError

COLOURS = ("R", "G", "B")


def rgb_mixing(channels: Sequence[str], rgb_map: Mapping[str, str]) -> np.ndarray:
    """(3, C) matrix turning C stains into RGB; stains sharing a colour are averaged.

    Stain names match ``rgb_map`` case-insensitively (a plate map's ``path_dapi`` is DAPI).
    """
    by_name = {str(k).lower(): v for k, v in rgb_map.items()}
    mix = np.zeros((3, len(channels)), np.float32)
    for c, stain in enumerate(channels):
        colour = by_name.get(stain.lower())
        if colour is None:
            raise CellmorphError(f"rgb input: stain {stain!r} has no colour in rgb_map "
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
    scale = 1.0 / (std * 255.0) if tiles.dtype == torch.uint8 else 1.0 / std
    x = tiles.float()
    if mixing is not None:
        x = torch.einsum("kc,nchw->nkhw", mixing, x)
    # (x / 255 - mean) / std as one multiply-add, written straight into the output layout
    # (a grey stain broadcast to the three channels): one pass over the output instead of
    # three, 2x faster, equal to the step-by-step form within float rounding (5e-7).
    out = torch.empty((x.shape[0], 3, *x.shape[2:]), dtype=torch.float32, device=x.device,
                      memory_format=memory_format)
    return torch.addcmul(-mean / std, x, scale, out=out)


@dataclass
class InputSpec:
    """How uint8 stain tiles become model input: stain mixing and normalisation."""

    mixing: torch.Tensor | None
    mean: torch.Tensor
    std: torch.Tensor
    memory_format: torch.memory_format

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float tiles -> normalised model input."""
        return tiles_to_input(tiles, self.mixing, self.mean, self.std, self.memory_format)


def make_input_spec(model: nn.Module, channels: Sequence[str] | None,
                    rgb_map: Mapping[str, str] | None, device: torch.device,
                    channels_last: bool = True) -> InputSpec:
    """Stain-to-RGB mixing (None: one stain as grey) and the normalisation the model's weights
    expect, on ``device``."""
    norm = data_config(model)
    mixing = None
    if rgb_map is not None and channels is not None:
        mixing = torch.from_numpy(rgb_mixing(channels, rgb_map)).to(device)
    return InputSpec(mixing,
                     torch.tensor(norm["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1),
                     torch.tensor(norm["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1),
                     torch.channels_last if channels_last else torch.contiguous_format)
