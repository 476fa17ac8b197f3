"""The split of a network into a frozen trunk (stem and the first stages) and the trainable
rest (later stages, pooling, classifier), as fine-tuning with frozen stages and the cached
trunk need it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cellmorph.errors import CellmorphError


class _Pooled(nn.Module):
    """The whole feature extractor and the pooling: pre-logit features. Every part of the
    model but the classifier is registered (so freezing the trunk leaves the classifier)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        classifier = model.get_classifier()
        self.parts = nn.ModuleList([m for m in model.children() if m is not classifier])
        self.model = [model]  # a list, so the classifier is not registered here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features (timm's ``forward_head(pre_logits=True)``)."""
        model = self.model[0]
        return model.forward_head(model.forward_features(x), pre_logits=True)


class _Rest(nn.Module):
    """The units after the trunk, then the model's own pooling and classifier."""

    def __init__(self, model: nn.Module, units: Sequence[nn.Module]) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)
        self.model = [model]  # a list, so the full model is not registered twice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Remaining stages, then ``forward_head`` (pooling and classifier)."""
        for unit in self.units:
            x = unit(x)
        return self.model[0].forward_head(x)


def stage_units(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """The model's feature extractor as an ordered list of ``(name, module, stage)``.

    Top-level children are taken in order, with a sequence of stages (timm's ``blocks``,
    ``stages``) expanded into its elements; pooling and classifier are left out. Stages come
    from timm's ``group_matcher(coarse=True)``: 0 is the stem, 1.. the network's stages, the
    last group the head. A unit without parameters belongs to the stage before it.
    """
    if not hasattr(model, "group_matcher") or not hasattr(model, "forward_head"):
        raise CellmorphError(f"{type(model).__name__}: freezing stages / cached-trunk mode needs a "
                             "timm model with group_matcher and forward_head")
    from timm.models import group_modules

    groups = group_modules(model, model.group_matcher(coarse=True))
    stage_of = {name: gid for gid, names in groups.items() for name in names}
    head = set(_head_modules(model))
    units = []
    for name, child in model.named_children():
        if name in head:
            continue
        if isinstance(child, nn.Sequential) and name in ("blocks", "stages"):
            units += [(f"{name}.{i}", sub) for i, sub in enumerate(child)]
        else:
            units.append((name, child))
    out, stage = [], 0
    for name, unit in units:
        owned = [g for n, g in stage_of.items() if n == name or n.startswith(name + ".")]
        stage = min(owned) if owned else stage
        out.append((name, unit, stage))
    # Group ids need not be contiguous (timm numbers some models' blocks finely): renumber.
    ordinal = {gid: i for i, gid in enumerate(sorted({s for _, _, s in out}))}
    return [(name, unit, ordinal[s]) for name, unit, s in out]


def _head_modules(model: nn.Module) -> list[str]:
    names = ["global_pool", "head_drop", "head", "fc_norm"]
    classifier = model.pretrained_cfg.get("classifier", "fc") if hasattr(
        model, "pretrained_cfg") else "fc"
    return names + [classifier.split(".")[0]]


def n_stages(model: nn.Module) -> int:
    """How many stages (after the stem) a model's trunk can be split after."""
    units = stage_units(model)
    return len({s for _, _, s in units if s > 0})


def split_model(model: nn.Module, stages: int | str, *,
                check: bool = True) -> tuple[nn.Module, nn.Module]:
    """``(trunk, rest)`` with ``rest(trunk(x)) == model(x)``; the trunk holds the stem and the
    first ``stages`` stages (timm's coarse parameter groups); ``"all"``: everything up to the
    pooled pre-logit features, the rest being the classifier alone (a linear probe).

    With ``check``, the split is verified once on a small input, so a model whose forward is
    not its children in order (a transformer adding position embeddings, say) is refused
    instead of giving a wrong network.
    """
    if stages == 0:
        return nn.Identity(), model
    if stages == "all":
        if not hasattr(model, "get_classifier") or not hasattr(model, "forward_head"):
            raise CellmorphError(f"{type(model).__name__}: freeze_stages: all needs a timm "
                                 "model with forward_head and get_classifier")
        trunk, rest = _Pooled(model), model.get_classifier()
        key = (type(model).__name__, "all")
        if check and key not in _CHECKED_SPLITS:
            _check_split(model, trunk, rest)
            _CHECKED_SPLITS.add(key)
        return trunk, rest
    units = stage_units(model)
    available = n_stages(model)
    if stages >= available:
        raise CellmorphError(f"cannot freeze {stages} stages of {type(model).__name__}: it has "
                             f"{available}; leave at least one to train")
    trunk = nn.Sequential(*[u for _, u, s in units if s <= stages])
    rest = _Rest(model, [u for _, u, s in units if s > stages])
    key = (type(model).__name__, getattr(model, "default_cfg", {}).get("architecture"), stages)
    if check and key not in _CHECKED_SPLITS:
        _check_split(model, trunk, rest)
        _CHECKED_SPLITS.add(key)
    return trunk, rest


# Splits verified in this process: the check runs once per architecture and depth.
_CHECKED_SPLITS: set[tuple] = set()


def _check_split(model: nn.Module, trunk: nn.Module, rest: nn.Module) -> None:
    size = int(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))[-1])
    was_training = model.training
    model.eval()
    try:
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        param = next(model.parameters())
        x = x.to(param.device)
        with torch.no_grad():
            ok = torch.allclose(rest(trunk(x)), model(x), atol=1e-4, rtol=1e-3)
    except RuntimeError:
        ok = False
    finally:
        model.train(was_training)
    if not ok:
        raise CellmorphError(f"{type(model).__name__} cannot be split into a trunk and the rest "
                             "stage by stage; use freeze_stages: 0 with this model")


def freeze(module: nn.Module) -> nn.Module:
    """No gradients and inference-mode batch norm for a frozen trunk."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
