"""What the network sees: activation maximisation climbs the chosen filter, Grad-CAM gives one
map per crop, for ResNet50 and EfficientNet-Lite0, and `explain` works from a run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cellmorph import api
from cellmorph.backbones import create_backbone, data_config
from cellmorph.interpret.actmax import active_channels, default_layers, maximise
from cellmorph.interpret.gradcam import grad_cam


@pytest.fixture(scope="module", params=["resnet50", "tf_efficientnet_lite0"])
def network(request):
    torch.manual_seed(0)
    weights = "imagenet" if request.param.startswith("tf_") else "random"  # offline
    return request.param, create_backbone(request.param, weights, num_classes=3).eval()


def test_activation_maximisation_raises_the_filter(network) -> None:
    name, model = network
    norm = data_config(model)
    layer = default_layers(model)[0]
    channel = active_channels(model, layer, 1, mean=norm["mean"], std=norm["std"], size=64)[0]
    result = maximise(model, layer, channel, mean=norm["mean"], std=norm["std"], size=64,
                      steps=40, seed=0)
    assert result.start_activation >= 0  # a post-activation layer
    assert result.final_activation > 2.0 * max(result.start_activation, 1e-3), (name, result)
    assert result.image.shape == (64, 64, 3)
    assert 0 <= result.image.min() and result.image.max() <= 1
    again = maximise(model, layer, channel, mean=norm["mean"], std=norm["std"], size=64,
                     steps=40, seed=0)
    np.testing.assert_allclose(again.image, result.image)  # seeded: the same picture


def test_grad_cam_gives_one_map_per_crop(network) -> None:
    name, model = network
    x = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    maps = grad_cam(model, x, [0, 1, 2])
    assert maps.shape == (3, 96, 96)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert (maps.reshape(3, -1).max(1) > 0).all(), name  # every crop gets a map


def test_explain_a_run_folder(tiny021: Path, tmp_path: Path) -> None:
    api.train(index=tiny021, output=tmp_path / "run", model="tf_efficientnet_lite0",
              preset="fast", epochs=1, folds=["emetine", "cytochalasin B"], progress=False,
              precision="fp32",
              preprocess={"grid": [1, 1], "tile_size": 64, "illumination": False,
                          "drop_empty": False})
    assert not (tmp_path / "run" / "explain").exists()
    result = api.explain(tmp_path / "run", output=tmp_path / "run" / "explain", size=48,
                         steps=8, filters=1, crops_per_moa=1, progress=False)
    assert list(result.actmax) == ["pretrained", "fine-tuned (fold cytochalasin B)"]
    assert len(result.actmax["pretrained"]) == len(default_layers(create_backbone(
        "tf_efficientnet_lite0", "random", num_classes=2)))
    assert result.crops, "no Grad-CAM crops: the run's tile cache was not found"
    assert {c.moa for c in result.crops} <= {"Actin disruptors", "Protein synthesis"}
    assert all(c.heat.shape == c.image.shape[:2] for c in result.crops)
    for name in ("actmax.png", "gradcam.png", "explain.json"):
        assert (tmp_path / "run" / "explain" / name).is_file(), name


def test_keep_models_explain_keeps_one_fold_per_moa_and_explain_uses_them(
        tiny021: Path, tmp_path: Path) -> None:
    """`keep_models: explain` writes the model of the first fold of each MoA only (a demo's
    disk), and explain then draws its filters and its Grad-CAM crops from those models."""
    folds = ["anisomycin", "cytochalasin B", "cytochalasin D", "emetine"]
    api.train(index=tiny021, output=tmp_path / "run", model="tf_efficientnet_lite0",
              preset="fast", epochs=1, folds=folds, progress=False, precision="fp32",
              freeze_stages=5, cached_trunk=True, keep_models="explain",
              preprocess={"grid": [1, 1], "tile_size": 64, "illumination": False,
                          "drop_empty": False})
    kept = sorted(p.parent.name.rsplit("-", 1)[0]
                  for p in (tmp_path / "run" / "seed0" / "folds").glob("*/model.safetensors"))
    assert kept == ["anisomycin", "cytochalasin_B"]  # Protein synthesis, Actin disruptors
    result = api.explain(tmp_path / "run", size=48, steps=4, filters=1, crops_per_moa=1,
                         progress=False)
    assert list(result.actmax) == ["pretrained", "fine-tuned (fold anisomycin)"]
    assert result.crops and {c.fold for c in result.crops} <= {"anisomycin", "cytochalasin B"}
    stored = load_file(str(next((tmp_path / "run" / "seed0" / "folds").glob(
        "*/model.safetensors"))))
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
