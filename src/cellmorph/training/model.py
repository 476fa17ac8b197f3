"""Classifiers for fine-tuning, and splitting a network into a frozen trunk and the rest."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cellmorph.backbones import create_backbone
from cellmorph.errors import CellmorphError


def create_classifier(model_name: str, weights: str | Path, num_classes: int) -> nn.Module:
    """A timm model with global pooling and a new linear head of ``num_classes``.

    ``weights``: ``imagenet`` (pretrained trunk, fresh head), ``xavier`` (Kensert et al.'s
    from-scratch baseline), ``random`` or a weights file.
    """
    return create_backbone(model_name, weights, num_classes=num_classes)


class _EfficientNetRest(nn.Module):
    def __init__(self, model: nn.Module, start: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*list(model.blocks)[start:])
        self.conv_head, self.bn2 = model.conv_head, model.bn2
        self.model = [model]  # a list, so the full model is not registered twice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Remaining blocks, head convolution, pooling and classifier."""
        return self.model[0].forward_head(self.bn2(self.conv_head(self.blocks(x))))


class _ResNetRest(nn.Module):
    def __init__(self, model: nn.Module, start: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[getattr(model, f"layer{i}") for i in range(start + 1, 5)])
        self.model = [model]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Remaining residual stages, pooling and classifier."""
        return self.model[0].forward_head(self.layers(x))


def split_model(model: nn.Module, stages: int) -> tuple[nn.Module, nn.Module]:
    """``(trunk, rest)`` with ``rest(trunk(x)) == model(x)``; the trunk holds the stem and the
    first ``stages`` stages. Supported: EfficientNet/MobileNet-style (``blocks``) and
    ResNet-style (``layer1``-``layer4``) timm models.
    """
    if stages == 0:
        return nn.Identity(), model
    if hasattr(model, "conv_stem") and hasattr(model, "blocks"):
        if stages >= len(model.blocks):
            raise CellmorphError(f"cannot freeze {stages} stages: the model has "
                                 f"{len(model.blocks)}; leave at least one to train")
        trunk = nn.Sequential(model.conv_stem, model.bn1, *list(model.blocks)[:stages])
        return trunk, _EfficientNetRest(model, stages)
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)) and hasattr(model, "conv1"):
        if stages >= 4:
            raise CellmorphError("cannot freeze 4 stages of a ResNet: leave at least one")
        stem = [model.conv1, model.bn1, model.act1, model.maxpool]
        trunk = nn.Sequential(*stem, *[getattr(model, f"layer{i}") for i in range(1, stages + 1)])
        return trunk, _ResNetRest(model, stages)
    raise CellmorphError(f"{type(model).__name__}: freezing stages / cached-trunk mode supports "
                         "EfficientNet/MobileNet-style and ResNet-style timm models")


def freeze(module: nn.Module) -> nn.Module:
    """No gradients and inference-mode batch norm for a frozen trunk."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
