"""bf16 against fp32 on the CPU: the table ``precision: auto`` follows (runtime.CPU_AUTO).

    python bench/precision.py [--quick] [--models tf_efficientnet_lite0 resnet50] [--sizes 64 224]

For each model and input size, two workloads as runs compute them:

- profile: the frozen network's forward (BatchNorm folded, channels-last, no_grad, batch 64),
  the step ``cellmorph profile`` repeats for every batch of tiles;
- train: forward + backward + AdamW step (channels-last, batch 32: the ``fast`` preset),
  the step ``cellmorph train`` repeats for every batch of crops.

Each pair is timed interleaved (fp32, bf16, fp32, bf16 ...) and the median ratio is kept.
The same measurement is repeated in a child process whose oneDNN is capped below the bf16
instructions (ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI): what a CPU *without* native bf16 runs
(bf16 emulated), measured on the same cores rather than guessed. Writes bench/precision.json
and prints a Markdown table naming the CPU. Timings do not depend on the weights (random).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from cellmorph.backbones import create_backbone
from cellmorph.backbones.fusion import fold_batchnorm
from cellmorph.runtime import autocast, cpu_has_native_bf16, keep_freed_memory

HERE = Path(__file__).parent
EMULATED_ISA = "AVX512_CORE_VNNI"  # AVX-512 without the bf16 instructions


def cpu_name() -> str:
    """The CPU's model name and whether it has native bf16, as /proc/cpuinfo says."""
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return name


def _profile_step(model: torch.nn.Module, x: torch.Tensor, precision):
    def step() -> None:
        with torch.no_grad(), autocast(x.device, precision):
            model(x)
    return step


def _train_step(model: torch.nn.Module, x: torch.Tensor, precision):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    y = torch.zeros(len(x), dtype=torch.long)

    def step() -> None:
        with autocast(x.device, precision):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _items_per_second(step, items: int, seconds: float) -> float:
    step()  # warm-up (oneDNN picks and caches its kernels)
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < seconds:
        step()
        n += 1
    return n * items / (time.perf_counter() - start)


def measure(model_name: str, size: int, workload: str, repeats: int, seconds: float) -> dict:
    """fp32 and bf16 rates of one workload, interleaved; the median ratio bf16 / fp32."""
    torch.manual_seed(0)
    batch = 64 if workload == "profile" else 32
    model = create_backbone(model_name, "random", num_classes=12)
    model = model.to(memory_format=torch.channels_last)
    if workload == "profile":
        model, _ = fold_batchnorm(model.eval())
    else:
        model.train()
    x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    make = _profile_step if workload == "profile" else _train_step
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(repeats):
        for name, precision in (("fp32", None), ("bf16", torch.bfloat16)):
            rates[name].append(_items_per_second(make(model, x, precision), batch, seconds))
    ratios = [b / f for f, b in zip(rates["fp32"], rates["bf16"], strict=True)]
    return {"model": model_name, "size": size, "workload": workload,
            "fp32": statistics.median(rates["fp32"]), "bf16": statistics.median(rates["bf16"]),
            "ratio": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)]}


def run_all(models: list[str], sizes: list[int], repeats: int, seconds: float) -> list[dict]:
    """Every (model, size, workload) row on this process's CPU instructions."""
    keep_freed_memory()  # as every run does
    return [measure(m, s, w, repeats, seconds)
            for m in models for s in sizes for w in ("profile", "train")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tf_efficientnet_lite0", "resnet50"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 224])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per timed run")
    parser.add_argument("--quick", action="store_true", help="1 repeat of 1 s")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE / "precision.json")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.seconds = 1, 1.0
    rows = run_all(args.models, args.sizes, args.repeats, args.seconds)
    if args.child:
        print(json.dumps(rows))
        return
    native = cpu_has_native_bf16()
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "native_bf16": native,
              "rows": [{**r, "bf16_kind": "native" if native else "emulated"} for r in rows]}
    if native:  # the same cores without their bf16 instructions: a CPU without native bf16
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": EMULATED_ISA}
        cmd = [sys.executable, __file__, "--child", "--repeats", str(args.repeats),
               "--seconds", str(args.seconds), "--models", *args.models,
               "--sizes", *map(str, args.sizes)]
        child = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        emulated = json.loads(child.stdout.strip().splitlines()[-1])
        result["rows"] += [{**r, "bf16_kind": f"emulated (ONEDNN_MAX_CPU_ISA={EMULATED_ISA})"}
                           for r in emulated]
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['cpu']}, {result['threads']} threads, torch {result['torch']}")
    print("| model | px | workload | bf16 | fp32 items/s | bf16 items/s | bf16 / fp32 |")
    print("|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        lo, hi = r["ratio_range"]
        print(f"| {r['model']} | {r['size']} | {r['workload']} | {r['bf16_kind']} | "
              f"{r['fp32']:.1f} | {r['bf16']:.1f} | {r['ratio']:.2f} ({lo:.2f}-{hi:.2f}) |")


if __name__ == "__main__":
    main()
