"""Where a training step's time goes, per method and executor: torch.profiler over a few steps.

    python benchmarks/gpu_profile.py --model resnet50 --variants sgd,damp_fused,damp_split --out FILE.json
    python benchmarks/gpu_profile.py --device cpu --batch 8 --warmup 1 --steps 1   # a quick check
    python benchmarks/gpu_profile.py --model resnet50 --batchnorm-kernels generic  # A/B the BatchNorm paths

The GPU suite gives each method's step time against SGD; this says why a ratio is what it is. Per
variant it reports the wall time of a step, the device time its kernels took (on CUDA), how many
kernels it launched, and the operators that took the most time. A step whose kernels take far less
than its wall time is bound by launches (the host), one whose kernels fill it is bound by the
kernels themselves. Same setup as the suite (benchmarks/gpu_measure.py): bf16 autocast,
channels_last and cuDNN autotuning on CUDA, fp32 on CPU, M = 8.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import gpu_measure  # benchmarks/gpu_measure.py, next to this script
from gpu_suite import PLANS  # the suite owns the models' shapes
from damp.methods import sync_batchnorm
from damp.runtime import autocast_dtype
from damp.speed import build_variant, train_step
from damp.timing import time_steps

SHAPES = {name: {key: spec[key] for key in ("batch", "image_size", "num_classes")}
          for name, spec in PLANS["cuda"].models.items()}


def _device_us(row) -> float:
    """A key_averages row's own device time in microseconds (the attribute was renamed in torch 2.4)."""
    return float(getattr(row, "self_device_time_total", getattr(row, "self_cuda_time_total", 0.0)))


def profile_variant(name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                    y: torch.Tensor, device: torch.device, *, m: int = 8, warmup: int = 3, steps: int = 3,
                    top: int = 15) -> dict:
    """Wall ms per step of one variant (timed without the profiler), then, profiled, its kernel ms and kernel
    launches per step and its ``top`` costliest operators."""
    settings = gpu_measure.device_settings(device)
    dtype = autocast_dtype(settings["precision"])
    method = build_variant(*gpu_measure._split_variant(name), m)

    def step() -> None:
        train_step(model, optimizer, method, x, y, dtype)

    cuda = device.type == "cuda"
    with gpu_measure.cudnn_benchmark(settings["cudnn_benchmark"]):
        for _ in range(warmup):
            step()
        wall = time_steps(step, steps, device)  # without the profiler, whose overhead is per operator
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(steps):
                step()
            if cuda:
                torch.cuda.synchronize(device)
    rows = prof.key_averages()
    kernels = [r for r in rows if r.device_type == DeviceType.CUDA]
    costly = sorted(rows, key=(_device_us if cuda else (lambda r: r.self_cpu_time_total)), reverse=True)[:top]
    return {"wall_ms": 1e3 * wall,
            "kernel_ms": sum(_device_us(r) for r in kernels) / 1e3 / steps if cuda else None,
            "kernel_launches": sum(r.count for r in kernels) / steps if cuda else None,
            "top": [{"op": r.key, "calls": r.count / steps,
                     "ms": (_device_us(r) if cuda else r.self_cpu_time_total) / 1e3 / steps} for r in costly]}


def profile_model(model_name: str, device: torch.device, variants: list[str], *, batch: int | None = None,
                  image_size: int | None = None, m: int = 8, warmup: int = 3, steps: int = 3) -> dict:
    """:func:`profile_variant` for each variant on one freshly initialised model (the suite's shapes)."""
    shape = {**SHAPES[model_name], **({"batch": batch} if batch else {}),
             **({"image_size": image_size} if image_size else {})}
    settings = gpu_measure.device_settings(device)
    model, optimizer, x, y = gpu_measure.training_setup(model_name, shape["batch"], device,
                                                        image_size=shape["image_size"],
                                                        num_classes=shape["num_classes"],
                                                        channels_last=settings["channels_last"])
    out = {"model": model_name, **shape, "num_perturbations": m, **settings,
           "batchnorm_kernels": "native" if sync_batchnorm.NATIVE_CUDA_KERNELS else "generic",
           "environment": gpu_measure.environment(device), "variants": {}}
    for name in variants:
        try:
            out["variants"][name] = profile_variant(name, model, optimizer, x, y, device, m=m, warmup=warmup,
                                                    steps=steps)
        except Exception as err:  # noqa: BLE001 - one failing variant must not lose the others
            out["variants"][name] = {"error": gpu_measure.one_line(err)}
    return out


def table(result: dict) -> str:
    """A short text digest: one line per variant, then its costliest operators."""
    lines = [f"{result['model']}, batch {result['batch']}, {result['image_size']} px, {result['precision']}, "
             f"{result['batchnorm_kernels']} sub-batch BatchNorm kernels"]
    for name, row in result["variants"].items():
        if "error" in row:
            lines.append(f"{name}: {row['error']}")
            continue
        kernel = "" if row["kernel_ms"] is None else (f", kernels {row['kernel_ms']:.1f} ms in "
                                                      f"{row['kernel_launches']:.0f} launches")
        lines.append(f"{name}: wall {row['wall_ms']:.1f} ms{kernel}")
        lines += [f"    {r['ms']:8.2f} ms {r['calls']:6.0f} x  {r['op'][:70]}" for r in row["top"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--model", choices=sorted(SHAPES), default="resnet18")
    parser.add_argument("--variants", default="sgd,damp_fused,damp_split,sam_fused",
                        help="comma-separated: sgd, or <method>_<executor> as in the GPU suite")
    parser.add_argument("--batch", type=int, default=None, help="default: the suite's (128 / 256)")
    parser.add_argument("--image-size", type=int, default=None, help="default: the suite's (32 / 224)")
    parser.add_argument("--warmup", type=int, default=3, help="unprofiled steps first (cuDNN autotuning)")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps per variant")
    parser.add_argument("--out", default=None, help="also write the figures as JSON")
    parser.add_argument("--batchnorm-kernels", choices=("native", "generic"), default="native",
                        help="the sub-batch BatchNorm's passes on CUDA: BatchNorm's own kernels (the default) "
                             "or the generic elementwise passes that CPU and torch.compile use")
    args = parser.parse_args(argv)
    sync_batchnorm.NATIVE_CUDA_KERNELS = args.batchnorm_kernels == "native"
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_profile.py: --device cuda requested but no CUDA device is available", file=sys.stderr)
        return 2
    variants = [v for v in args.variants.split(",") if v]
    known = set(gpu_measure.variant_names()) | {f"{m}_auto" for m in gpu_measure.RATIO_TARGETS}
    if not variants or set(variants) - known:
        print(f"gpu_profile.py: unknown --variants {','.join(sorted(set(variants) - known)) or '(none)'}",
              file=sys.stderr)
        return 2
    result = profile_model(args.model, torch.device(args.device), variants, batch=args.batch,
                           image_size=args.image_size, warmup=args.warmup, steps=args.steps)
    print(table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 1 if any("error" in row for row in result["variants"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
