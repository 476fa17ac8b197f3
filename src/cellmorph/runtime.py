"""Where and how networks run: the device, the precision, autocast, and the allocator settings
of a long run. (The model input and the trunk split are the network's own matters:
:mod:`cellmorph.backbones.model_input`, :mod:`cellmorph.backbones.trunk`.)

Shared by profiling (frozen features) and training (fine-tuning); both sit on top of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import re
import sys
from dataclasses import dataclass

import torch

from cellmorph.errors import CellmorphError

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
