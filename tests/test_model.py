"""Splitting networks into a frozen trunk and the trainable rest."""

from __future__ import annotations

import pytest
import torch

from cellmorph.errors import CellmorphError
from cellmorph.training.model import create_classifier, freeze, split_model


@pytest.mark.parametrize(("name", "stages"), [("tf_efficientnet_lite0", 3), ("resnet18", 2),
                                              ("resnet18", 0)])
def test_rest_of_trunk_equals_model(name: str, stages: int) -> None:
    torch.manual_seed(0)
    model = create_classifier(name, "random", 5).eval()
    trunk, rest = split_model(model, stages)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rest(trunk(x)), model(x))
    freeze(trunk)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert all(id(p) not in trainable for p in trunk.parameters())
    assert (len(trainable) < len(list(model.parameters()))) == (stages > 0)


def test_unsupported_split() -> None:
    model = create_classifier("vit_tiny_patch16_224", "random", 3)
    with pytest.raises(CellmorphError, match="supports EfficientNet/MobileNet-style"):
        split_model(model, 2)
    with pytest.raises(CellmorphError, match="cannot freeze 7 stages"):
        split_model(create_classifier("tf_efficientnet_lite0", "random", 3), 7)
