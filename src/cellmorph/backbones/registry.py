"""Create timm backbones and resolve where their weights come from.

``weights`` is one of:
- ``"imagenet"``: the bundled offline weights for ``tf_efficientnet_lite0/1/2``, else timm's
  hub (needs the internet once; timm caches the download);
- ``"random"``: timm's default initialisation; ``"xavier"``: Xavier-uniform convolutions and
  linear layers (Kensert et al.'s from-scratch baseline);
- a path to a ``.safetensors`` file or a torch state dict (loaded with ``weights_only=True``).
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import timm
import torch
from torch import nn

from cellmorph.backbones import efficientnet_lite
from cellmorph.errors import CellmorphError

# The three networks of Kensert et al. 2019 and their input sizes.
PAPER_MODELS = {"resnet50": 224, "inception_v3": 299, "inception_resnet_v2": 299}


def default_input_size(model_name: str) -> int:
    """The square input size a model was trained at (paper models: 224 or 299)."""
    if model_name in PAPER_MODELS:
        return PAPER_MODELS[model_name]
    cfg = _pretrained_cfg(model_name)
    return int(cfg.get("input_size", (3, 224, 224))[-1])


def data_config(model: nn.Module) -> dict:
    """Mean and std the model's weights expect (ImageNet for pretrained timm models)."""
    cfg = timm.data.resolve_data_config({}, model=model)
    return {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]), "input_size": cfg["input_size"]}


@functools.cache
def has_depthwise_convolutions(model_name: str) -> bool:
    """Whether the network convolves each channel on its own anywhere (EfficientNet,
    MobileNet, ConvNeXt): their backward pass is slower in bf16 than in fp32 on a CPU
    (bench/precision.py). Built on the meta device: no memory, no weights, ~0.05 s."""
    check_model(model_name, "random")
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False)
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
               for m in model.modules())


def check_model(model_name: str, weights: str | Path = "imagenet") -> None:
    """Raise a clear error for an unknown model or a missing weights file (before any work)."""
    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('_')[0]}*")[:5]
        raise CellmorphError(f"timm does not know the model {model_name!r}; "
                             f"similar names: {close or 'none'} (see timm.list_models())")
    weights_str = str(weights)
    if weights_str not in ("imagenet", "random", "xavier") and not Path(weights_str).is_file():
        raise CellmorphError(f"weights file {weights_str} not found; pass 'imagenet', 'random', "
                             "'xavier' or an existing .safetensors/.pth file")


def create_backbone(model_name: str, weights: str | Path = "imagenet", *,
                    num_classes: int = 0, drop_rate: float = 0.0) -> nn.Module:
    """A timm model with global pooling; ``num_classes=0`` returns pooled features."""
    check_model(model_name, weights)
    kwargs = {"num_classes": num_classes, "drop_rate": drop_rate}
    weights_str = str(weights)
    if weights_str in ("random", "xavier"):
        model = timm.create_model(model_name, pretrained=False, **kwargs)
        if weights_str == "xavier":
            xavier_init(model)
        return model
    if weights_str == "imagenet":
        variant = efficientnet_lite.bundled_variant(model_name)
        if variant is not None:
            model = timm.create_model(model_name, pretrained=False, **kwargs)
            efficientnet_lite.load_bundled(model, variant)
            # timm's config for this model (mean = std = 0.5) fits the bundled weights:
            # skimage's coffee photo -> espresso, p = 0.95 with timm's eval transform.
            return model
        return _from_hub(model_name, kwargs)
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    state = load_weights_file(weights_str)
    _load_compatible(model, state, weights_str)
    return model


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict safely: safetensors, or torch with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CellmorphError(f"weights file {path} not found; pass 'imagenet', 'random', "
                             "'xavier' or an existing .safetensors/.pth file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for bad files
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if "weights_only" in reason:  # torch's long advice on unpickling, not ours to give
            reason = "not a plain state dict of tensors: torch's safe loader refused it"
        raise CellmorphError(f"{path}: cannot be loaded as weights ({reason}); use a "
                             "safetensors file or a plain torch state dict") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CellmorphError(f"{path}: holds no state dict")
    return state


def xavier_init(model: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every convolution and linear layer."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a weights file into ``model`` in place (safely; the classifier may differ): one
    network serves several weights files of its architecture without being built again."""
    _load_compatible(model, load_weights_file(path), str(path))


def _load_compatible(model: nn.Module, state: dict, source: str) -> None:
    """Load a file's weights; only the classifier may be missing or differently shaped."""
    own = model.state_dict()
    classifier = model.pretrained_cfg.get("classifier", "fc")
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.startswith(classifier)]
    if missing:
        raise CellmorphError(f"{source}: {len(missing)} tensors of the model are missing or "
                             f"differ in shape (first: {missing[:3]}); is it the right "
                             "architecture?")
    model.load_state_dict(usable, strict=False)


HUB_HOST = ("huggingface.co", 443)
_NO_HUB_WEIGHTS = ("provide them one of these ways: go online once so timm can download and "
                   "cache them; pass --weights FILE (a .safetensors or torch state dict); use "
                   "a bundled offline model (tf_efficientnet_lite0/1/2); or --weights "
                   "random/xavier")


def check_weights(model_name: str, weights: str | Path = "imagenet") -> None:
    """Check, before a run creates anything, that ``model_name`` exists and its ``weights``
    load: a file is read (safely) and matched against the architecture, hub weights must be
    cached or the hub reachable within seconds (one clear error otherwise)."""
    check_model(model_name, weights)
    weights_str = str(weights)
    if weights_str in ("random", "xavier"):
        return
    if weights_str == "imagenet":
        if efficientnet_lite.bundled_variant(model_name) is None:
            hub_weights_source(model_name)
        return
    state = load_weights_file(weights_str)
    _load_compatible(timm.create_model(model_name, pretrained=False), state, weights_str)


def cached_hub_file(model_name: str) -> Path | None:
    """The model's ImageNet weights in the local Hugging Face cache, if they are there."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    return None


def hub_weights_source(model_name: str) -> Path | None:
    """Where a hub model's ImageNet weights come from: the local cache (a file), or the hub
    (None) when it answers; a clear error in seconds when neither is there."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not (getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None)):
        raise CellmorphError(f"timm has no ImageNet weights for {model_name}; "
                             f"{_NO_HUB_WEIGHTS}")
    cached = cached_hub_file(model_name)
    if cached is not None:
        return cached
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise CellmorphError(f"no ImageNet weights for {model_name} in the local cache and "
                             f"HF_HUB_OFFLINE is set; {_NO_HUB_WEIGHTS}")
    try:
        socket.create_connection(HUB_HOST, timeout=5).close()
    except OSError as exc:
        raise CellmorphError(
            f"no ImageNet weights for {model_name} in the local cache, and the Hugging Face hub "
            f"({HUB_HOST[0]}) cannot be reached ({exc.strerror or exc}; working offline, set "
            f"HF_HUB_OFFLINE=1 to skip the hub); {_NO_HUB_WEIGHTS}"
        ) from None
    return None


def _from_hub(model_name: str, kwargs: dict) -> nn.Module:
    cached = hub_weights_source(model_name)
    # A cached file is loaded as a file: no network call (and no retries) when offline.
    overlay = {"pretrained_cfg_overlay": {"file": str(cached)}} if cached else {}
    try:
        return timm.create_model(model_name, pretrained=True, **kwargs, **overlay)
    except Exception as exc:  # network, hub and cache errors come in many types
        raise CellmorphError(
            f"no ImageNet weights for {model_name} could be loaded ({type(exc).__name__}); "
            f"{_NO_HUB_WEIGHTS}") from exc


def _pretrained_cfg(model_name: str) -> dict:
    try:
        return timm.models.get_pretrained_cfg(model_name).to_dict()
    except Exception:  # unknown models have no config: fall back to 224
        return {}
