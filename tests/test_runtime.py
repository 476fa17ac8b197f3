"""The runtime: devices, precision, stain mixing, and splitting networks into a frozen trunk
and the trainable rest, parametrised over timm architectures."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cellmorph import runtime
from cellmorph.backbones import create_backbone
from cellmorph.backbones.model_input import rgb_mixing, tiles_to_input
from cellmorph.backbones.trunk import freeze, n_stages, split_model
from cellmorph.errors import CellmorphError
from cellmorph.runtime import (
    Runtime,
    auto_precision,
    keep_freed_memory,
    resolve_device,
    resolve_precision,
)

MEASURED = Path(__file__).parents[1] / "bench" / "precision.json"


@pytest.mark.parametrize(("name", "stages"), [("tf_efficientnet_lite0", 3), ("resnet18", 2),
                                              ("resnet18", 0), ("tf_efficientnet_lite0", 6),
                                              ("inception_v3", 4), ("convnext_atto", 2)])
def test_rest_of_trunk_equals_model(name: str, stages: int) -> None:
    torch.manual_seed(0)
    model = create_backbone(name, "random", num_classes=5).eval()
    trunk, rest = split_model(model, stages)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(rest(trunk(x)), model(x))
    freeze(trunk)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert all(id(p) not in trainable for p in trunk.parameters())
    assert (len(trainable) < len(list(model.parameters()))) == (stages > 0)


def test_stage_counts_follow_timm_groups() -> None:
    assert n_stages(create_backbone("tf_efficientnet_lite0", "random", num_classes=3)) == 7
    assert n_stages(create_backbone("resnet18", "random", num_classes=3)) == 4


def test_unsupported_split() -> None:
    model = create_backbone("vit_tiny_patch16_224", "random", num_classes=3)
    with pytest.raises(CellmorphError, match="cannot be split into a trunk and the rest"):
        split_model(model, 2)
    with pytest.raises(CellmorphError, match="cannot freeze 7 stages"):
        split_model(create_backbone("tf_efficientnet_lite0", "random", num_classes=3), 7)


def test_devices_are_checked_before_work() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(CellmorphError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(CellmorphError, match="no CUDA GPU is available"):
            resolve_device("cuda")
    assert resolve_precision("fp32", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16


@pytest.mark.parametrize(("device", "preprocess_on"),
                         [("cpu", "cpu"), ("cuda:1", "cuda:1"), ("mps", "cpu")])
def test_fields_are_preprocessed_on_the_runs_gpu(device: str, preprocess_on: str) -> None:
    assert Runtime(torch.device(device), None).preprocess_device == torch.device(preprocess_on)


def test_rgb_mixing_averages_shared_colours() -> None:
    mix = rgb_mixing(["DNA", "ER", "RNA", "Mito"], {"DNA": "B", "ER": "G", "RNA": "G",
                                                   "Mito": "R"})
    np.testing.assert_allclose(mix, [[0, 0, 0, 1], [0, 0.5, 0.5, 0], [1, 0, 0, 0]])


def test_rgb_mixing_matches_stains_case_insensitively() -> None:
    mix = rgb_mixing(["dapi", "tubulin", "actin"], {"DAPI": "R", "Tubulin": "G", "Actin": "B"})
    np.testing.assert_allclose(mix, np.eye(3))
    with pytest.raises(CellmorphError, match="stain 'mito' has no colour"):
        rgb_mixing(["mito"], {"DAPI": "R"})


@pytest.mark.parametrize("mode", ["grey", "rgb"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last],
                         ids=["nchw", "nhwc"])
def test_tiles_to_input_matches_torchvision_normalize(mode: str, layout) -> None:
    """Reference: the image scaled to [0, 1], then torchvision's normalize (grey or mixed RGB)."""
    from torchvision.transforms.v2 import functional as TF

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 2, 20, 24),
                                                               dtype=np.uint8))
    mixing = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]) if mode == "rgb" else None
    if mixing is None:
        tiles = tiles[:, :1]
        image = tiles.expand(-1, 3, -1, -1).float() / 255
    else:
        image = torch.einsum("kc,nchw->nkhw", mixing, tiles.float() / 255)
    expected = TF.normalize(image, list(mean), list(std))
    out = tiles_to_input(tiles, mixing, torch.tensor(mean).view(1, 3, 1, 1),
                         torch.tensor(std).view(1, 3, 1, 1), layout)
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-6)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=layout)
    as_float = tiles_to_input(tiles.float() / 255, mixing, torch.tensor(mean).view(1, 3, 1, 1),
                              torch.tensor(std).view(1, 3, 1, 1))
    torch.testing.assert_close(as_float, expected, rtol=0, atol=2e-6)


_FAULTS_OF_REALLOCATION = """
import resource, sys
import numpy as np
from cellmorph.runtime import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "kept" else False
np.ones(64 * 2**20, np.uint8)  # allocated, touched and freed once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    np.ones(64 * 2**20, np.uint8)  # the same size again: page faults unless memory was kept
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc allocator setting")
def test_freed_memory_is_kept_for_reuse_instead_of_faulted_in_again() -> None:
    """Without it, glibc unmaps each large buffer on free and the next one page-faults anew:
    at least one fault per page, 32 per 64 MiB buffer even in 2 MiB huge pages."""
    runs = {}
    for mode in ("default", "kept"):
        out = subprocess.run([sys.executable, "-c", _FAULTS_OF_REALLOCATION, mode],
                             capture_output=True, text=True, check=True).stdout.split()
        runs[mode] = (out[0] == "True", int(out[1]))
    assert runs["kept"][0] and not runs["default"][0]
    assert runs["default"][1] >= 5 * 32  # every buffer faulted in again
    assert runs["kept"][1] < 32  # reused: fewer faults than one buffer has pages
    assert keep_freed_memory() is True and keep_freed_memory() is True  # idempotent


_RSS_AFTER_RELEASE = """
import sys
import numpy as np
from cellmorph.runtime import keep_freed_memory, release_freed_memory
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
keep_freed_memory()
blocks = [np.ones(2**20 + 4096 * i, np.uint8) for i in range(256)]  # ~256 MB, odd sizes
del blocks
kept = rss_mb()
released = release_freed_memory()
print(released, kept, rss_mb())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc allocator call")
def test_freed_memory_is_handed_back_between_plates() -> None:
    """What keep_freed_memory keeps, release_freed_memory returns (called once a plate, so
    that the peak does not creep with the number of plates)."""
    out = subprocess.run([sys.executable, "-c", _RSS_AFTER_RELEASE], capture_output=True,
                         text=True, check=True).stdout.split()
    released, kept, after = out[0] == "True", float(out[1]), float(out[2])
    assert released
    assert kept - after > 200  # the freed quarter gigabyte went back to the system


@pytest.mark.parametrize("native", [True, False], ids=["native bf16", "emulated bf16"])
def test_auto_precision_follows_the_measured_table(native: bool, monkeypatch) -> None:
    """On either kind of CPU, `auto` takes whichever of bf16 and fp32 bench/precision.py
    measured faster for the workload and the network (profiling and training; Lite0 with
    depthwise convolutions and ResNet50 without; 64 and 224 px)."""
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    rows = [r for r in json.loads(MEASURED.read_text())["rows"]
            if r["bf16_kind"].startswith("native" if native else "emulated")]
    assert {(r["model"], r["workload"]) for r in rows} == {
        (m, w) for m in ("tf_efficientnet_lite0", "resnet50") for w in ("profile", "train")}
    for row in rows:
        chosen, why = auto_precision(torch.device("cpu"), row["workload"], row["model"])
        faster = "bf16" if row["ratio"] > 1 else "fp32"  # median of interleaved ratios
        assert chosen == faster, (row, why)
        assert "bench/precision.py" in why
    assert resolve_precision("fp32", torch.device("cpu"), "train", "resnet50") is None


def test_a_capped_instruction_set_counts_as_no_native_bf16(monkeypatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert runtime.cpu_has_native_bf16() is False
    assert auto_precision(torch.device("cpu"), "profile", "resnet50")[0] == "fp32"
