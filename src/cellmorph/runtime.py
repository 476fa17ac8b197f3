"""Where and how networks run: device, precision, autocast, the model input, and the split of a
network into a frozen trunk and the trainable rest.

Shared by profiling (frozen features) and training (fine-tuning); both sit on top of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cellmorph.backbones import data_config
from cellmorph.errors import CellmorphError

COLOURS = ("R", "G", "B")
_DEVICE_RE = re.compile(r"^(cpu|cuda|mps)(:\d+)?$")


@dataclass(frozen=True)
class Runtime:
    """The device and the autocast dtype a run actually uses (``auto`` resolved)."""

    device: torch.device
    precision: torch.dtype | None  # None = fp32

    @property
    def precision_name(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``: what ``precision: auto`` resolved to."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.precision]

    @property
    def device_name(self) -> str:
        """The device as a name that another process resolves alike: ``cuda`` for any GPU
        (a Ray worker sees only the GPU it was given, as its first one), else ``cpu``."""
        return "cuda" if self.device.type == "cuda" else str(self.device)

    @property
    def preprocess_device(self) -> torch.device:
        """Where fields are preprocessed: on the run's GPU (the same code as on the CPU, with
        tiles within one grey level of the CPU's, so they are cached apart), else the CPU.
        Other accelerators (MPS) are not tested with the preprocessing and keep it on the
        CPU."""
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def summary(self) -> str:
        """One line for the log: the device and the precision actually used."""
        if self.device.type == "cuda":
            where = f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        else:
            where = f"cpu ({torch.get_num_threads()} threads)"
        native = ""
        if self.device.type == "cpu" and self.precision == torch.bfloat16:
            native = ", native on this CPU" if cpu_has_native_bf16() else ", emulated"
        return f"{where}, precision {self.precision_name}{native}"

    def describe(self) -> dict[str, str | bool]:
        """What a provenance record says about the hardware."""
        info: dict[str, str | bool] = {"device": str(self.device),
                                       "precision": self.precision_name}
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        else:
            info["cpu_native_bf16"] = cpu_has_native_bf16()
            info["threads"] = str(torch.get_num_threads())
        return info


# glibc's malloc gives every allocation above its mmap threshold (which grows, up to 32 MB) a
# fresh mapping and unmaps it on free, and trims the heap's top: so each layer of a CPU forward
# pass page-faults its activation buffers anew. Keeping freed memory in the process instead
# made the EfficientNet-Lite0 forward 2.3x faster on the development CPU (bench/README.md).
# Done by hand because the alternatives (jemalloc, tcmalloc) must be preloaded before Python
# starts; mallopt can be called at any time.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MALLOC_SETTINGS = ((_M_MMAP_THRESHOLD, 2**31 - 1), (_M_TRIM_THRESHOLD, 2**31 - 1),
                    (_M_TOP_PAD, 512 * 2**20))


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc keep freed memory in the process for reuse (no mmap per large buffer, no
    trimming); True when done. The process then holds its peak memory until it exits.

    Called when a run starts (and in each Ray worker); a no-op returning False where the C
    library is not glibc (macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all([mallopt(option, value) == 1 for option, value in _MALLOC_SETTINGS])


_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def runtime_from_names(device: str, precision: str) -> Runtime:
    """A runtime resolved elsewhere (the driver of a distributed run), by its names."""
    return Runtime(torch.device(device), _PRECISIONS[precision])


def resolve_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """The device and precision a config asks for, checked before any work starts."""
    dev = resolve_device(device)
    return Runtime(dev, resolve_precision(precision, dev))


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else CPU; an unknown or absent device is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not _DEVICE_RE.match(str(device)):
        raise CellmorphError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CellmorphError(f"device {device!r} asked for, but no CUDA GPU is available "
                                 "here; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CellmorphError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) "
                                 "present")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise CellmorphError(f"device {device!r} asked for, but MPS is not available here")
    return dev


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = fp32). ``auto``: bf16 on GPUs that have it and on CPUs with
    native bf16 (AVX512-BF16/AMX), else fp32 (emulated bf16 is slower than fp32 on a CPU)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise CellmorphError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device,
             precision: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``precision`` on ``device`` (no-op for fp32 / None)."""
    if precision is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision)


# ---------------------------------------------------------------- model input
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


# ---------------------------------------------------------------- trunk and rest
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
