"""Where and how networks run: the device, the precision, autocast, and the allocator settings
of a long run. (The model input and the trunk split are the network's own matters:
:mod:`cellmorph.backbones.model_input`, :mod:`cellmorph.backbones.trunk`.)

Shared by profiling (frozen features) and training (fine-tuning); both sit on top of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import sys
from dataclasses import dataclass
from typing import Literal

import torch

from cellmorph.backbones import has_depthwise_convolutions
from cellmorph.errors import CellmorphError

_DEVICE_RE = re.compile(r"^(cpu|cuda|mps)(:\d+)?$")


@dataclass(frozen=True)
class Runtime:
    """The device and the autocast dtype a run actually uses (``auto`` resolved)."""

    device: torch.device
    precision: torch.dtype | None  # None = fp32
    reason: str = "asked for"  # why this precision: the config's, or what auto chose and why

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
        why = f"precision: auto: {self.reason}" if self.reason != "asked for" else "asked for"
        if self.device.type == "cpu" and self.precision == torch.bfloat16:
            why += "; native on this CPU" if cpu_has_native_bf16() else "; emulated on this CPU"
        return f"{where}, precision {self.precision_name} ({why})"

    def describe(self) -> dict[str, str | bool]:
        """What a provenance record says about the hardware."""
        info: dict[str, str | bool] = {"device": str(self.device),
                                       "precision": self.precision_name,
                                       "precision_reason": self.reason}
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


def release_freed_memory() -> bool:
    """Hand the memory freed so far back to the system (glibc's ``malloc_trim``); True when
    done, a no-op returning False where the C library is not glibc.

    Called between plates: with :func:`keep_freed_memory` the allocator otherwise keeps every
    freed block, and the fragments left by one plate's differently sized buffers (cells: a
    different count on every plate) made the peak creep up by 15-100 MB a plate. Trimming
    once a plate costs only the next plate's first page faults.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0) >= 0)
    except (OSError, AttributeError):
        return False


_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
Workload = Literal["profile", "train"]

# What `precision: auto` takes on a CPU, by whether the CPU computes bf16 natively, what the
# run does with the network, and (for training) whether the network has depthwise
# convolutions: measured by bench/precision.py (bench/precision.json; the table, with the CPU
# of each row, in bench/README.md), not assumed. A CPU without native bf16 was measured as
# the same cores with oneDNN capped below the bf16 instructions.
CPU_AUTO: dict[tuple[bool, Workload, bool], tuple[str, str]] = {
    (True, "profile", False): ("bf16", "native bf16 on this CPU: the frozen forward ran "
                               "1.8-1.9x faster than fp32 (ResNet50, bench/precision.py)"),
    (True, "profile", True): ("bf16", "native bf16 on this CPU: the frozen forward ran "
                              "1.6-2.2x faster than fp32 (EfficientNet-Lite0, "
                              "bench/precision.py)"),
    (True, "train", False): ("bf16", "native bf16 on this CPU: training steps ran 1.5-2.2x "
                             "faster than fp32 (ResNet50, bench/precision.py)"),
    (True, "train", True): ("fp32", "a network with depthwise convolutions trains slower in "
                            "bf16 than fp32 even with native bf16 (0.5-0.7x, "
                            "EfficientNet-Lite0, bench/precision.py)"),
}
_EMULATED = ("fp32", "no native bf16 on this CPU: emulated bf16 ran 0.4-0.6x as fast as fp32 "
             "(bench/precision.py)")


def runtime_from_names(device: str, precision: str, reason: str = "resolved by the driver"
                       ) -> Runtime:
    """A runtime resolved elsewhere (the driver of a distributed run), by its names."""
    return Runtime(torch.device(device), _PRECISIONS[precision], reason)


def resolve_runtime(device: str = "auto", precision: str = "auto",
                    workload: Workload = "profile", model: str | None = None) -> Runtime:
    """The device and precision a config asks for, checked before any work starts;
    ``workload`` is what ``model`` is run for (``auto`` may choose differently for each)."""
    dev = resolve_device(device)
    if precision != "auto":
        return Runtime(dev, resolve_precision(precision, dev), "asked for")
    chosen, reason = auto_precision(dev, workload, model)
    return Runtime(dev, _PRECISIONS[chosen], reason)


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


def resolve_precision(precision: str, device: torch.device, workload: Workload = "profile",
                      model: str | None = None) -> torch.dtype | None:
    """The autocast dtype (None = fp32). ``auto``: bf16 on GPUs that have it (else fp16); on
    a CPU what :data:`CPU_AUTO` measured faster for the workload and the network."""
    if precision in _PRECISIONS:
        return _PRECISIONS[precision]
    if precision != "auto":
        raise CellmorphError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    return _PRECISIONS[auto_precision(device, workload, model)[0]]


def auto_precision(device: torch.device, workload: Workload = "profile",
                   model: str | None = None) -> tuple[str, str]:
    """What ``precision: auto`` takes on ``device`` for ``workload`` with the timm network
    ``model``, and why (the reason the run record keeps)."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "a GPU with bf16"
        return "fp16", "a GPU without bf16"
    if device.type != "cpu":
        return "fp32", f"{device.type}: mixed precision not tested there"
    if not cpu_has_native_bf16():
        return _EMULATED
    depthwise = model is not None and has_depthwise_convolutions(model)
    return CPU_AUTO[(True, workload, depthwise)]


# oneDNN's instruction-set caps below its bf16 kernels: a process started with one of them
# computes bf16 as a CPU without native bf16 does (bench/precision.py measures that way).
_ISA_CAPS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE",
                          "AVX512_CORE_VNNI"}


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX), and oneDNN is not
    capped below those instructions (``ONEDNN_MAX_CPU_ISA``)."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "")
    if cap.upper() in _ISA_CAPS_WITHOUT_BF16:
        return False
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
