"""BatchNorm folding: the same features as the unfolded network, for every paper model."""

from __future__ import annotations

import logging

import pytest
import timm
import torch
from torch import nn

from cellmorph.backbones import PAPER_MODELS, create_backbone, fold_batchnorm, fusion


def _with_trained_statistics(model: nn.Module) -> nn.Module:
    """Random running statistics and affine parameters, as a trained network has (a freshly
    initialised one has mean 0, var 1, weight 1, bias 0, which any fold leaves unchanged)."""
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


def _count_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name", [*sorted(PAPER_MODELS), "tf_efficientnet_lite0"])
def test_every_batchnorm_of_the_paper_models_folds_to_the_same_features(name: str) -> None:
    model = _with_trained_statistics(create_backbone(name, "random"))
    n_norms = _count_norms(model)
    folded, count = fold_batchnorm(model)
    assert count == n_norms > 0
    assert _count_norms(folded) == 0
    assert _count_norms(model) == n_norms  # the original is left as it was
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x), folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_a_convolution_read_twice_is_not_folded() -> None:
    class Branching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 4, 1)
            self.bn2 = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y + self.bn2(self.conv2(y))

    model = _with_trained_statistics(Branching())
    folded, count = fold_batchnorm(model)
    assert count == 1  # conv2 -> bn2 only: conv's output also feeds the sum
    assert isinstance(folded.bn, nn.BatchNorm2d) and isinstance(folded.bn2, nn.Identity)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_fold_that_changes_the_output_is_refused(monkeypatch, caplog) -> None:
    """Weight-standardised convolutions compute their weights: folding into them is wrong,
    and the numerical check catches it even when the type list would allow it."""
    model = _with_trained_statistics(nn.Sequential(timm.layers.StdConv2d(3, 4, 3),
                                                   nn.BatchNorm2d(4)))
    assert fold_batchnorm(model) == (model, 0)  # not a foldable type
    monkeypatch.setattr(fusion, "FOLDABLE_CONVS", (timm.layers.StdConv2d,))
    with caplog.at_level(logging.WARNING, logger="cellmorph"):
        assert fold_batchnorm(model) == (model, 0)
    assert "changed this model's output" in caplog.text


def test_an_untraceable_model_is_returned_unchanged() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # control flow on values: fx cannot trace it
                x = -x
            return self.bn(self.conv(x))

    model = DataDependent().eval()
    assert fold_batchnorm(model) == (model, 0)


def test_a_model_in_training_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
