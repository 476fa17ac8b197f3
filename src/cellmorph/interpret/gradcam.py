"""Grad-CAM heat maps (Selvaraju et al. 2017) with captum's ``LayerGradCam``: where in a crop
the network looks when it predicts a class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from cellmorph.errors import CellmorphError


def default_target_layer(model: nn.Module, input_size: int = 224) -> str:
    """The deepest feature stage (timm's ``feature_info``) whose maps are still at least 7x7
    for this input size: the last one at the usual 224 px, an earlier one for small crops."""
    infos = getattr(model, "feature_info", None)
    if not infos:
        raise CellmorphError(f"{type(model).__name__} has no feature_info; name the layer")
    for info in reversed(infos):
        if input_size / info["reduction"] >= 7:
            return info["module"]
    return infos[0]["module"]


def grad_cam(model: nn.Module, inputs: torch.Tensor, targets: Sequence[int], *,
             layer: str | None = None) -> np.ndarray:
    """One heat map per input (N, H, W) in [0, 1], for class ``targets[i]``, upsampled to the
    input size. ``inputs`` are normalised model inputs (N, 3, H, W)."""
    model = model.eval()
    name = layer or default_target_layer(model, int(inputs.shape[-1]))
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise CellmorphError(f"{type(model).__name__} has no layer {name!r}") from None
    inputs = inputs.detach().clone().requires_grad_(True)
    attribution = LayerGradCam(model, module).attribute(inputs, target=list(map(int, targets)),
                                                        relu_attributions=True)
    maps = LayerAttribution.interpolate(attribution, tuple(inputs.shape[-2:]),
                                        interpolate_mode="bilinear")[:, 0]
    maps = maps.detach().float().cpu().numpy()
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peak > 0, maps / np.maximum(peak, 1e-12), 0.0)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB crop (H, W, 3) in [0, 1] with a heat map (H, W) in [0, 1] laid over it."""
    from matplotlib import colormaps

    coloured = colormaps["inferno"](heat)[..., :3]
    return np.clip((1 - alpha) * image + alpha * coloured, 0, 1)
