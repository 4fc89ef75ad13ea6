"""`damp bench`: step-time ratios against SGD, trainer overhead, corruption and evaluation throughput.

Every ratio is measured within one run on one device, by the round-robin of :mod:`damp.timing`.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from damp import __version__, corruptions, methods
from damp.methods.subbatch import describe, plan, settle
from damp.models import build_model
from damp.corruptions import SEVERITIES
from damp.data.augment import random_crop
from damp.runtime import autocast_dtype
from damp.timing import median_time, paired_ratios, peak_memory_mib, round_robin_samples, sync, time_steps

# Reference ms per image per severity: the hendrycks/robustness code timed on one core of this project's
# CI machine class (docs/corruptions.md, "Speed").
REFERENCE_MS = {
    "gaussian_noise": (0.10, 0.54, 9.10), "shot_noise": (0.25, 1.42, 16.26),
    "impulse_noise": (0.14, 0.41, 4.37), "defocus_blur": (0.24, 0.62, 5.45),
    "glass_blur": (15.32, 69.21, 1442.79), "motion_blur": (1.52, 4.78, 109.70),
    "zoom_blur": (4.51, 11.53, 98.50), "snow": (2.02, 4.28, 46.91), "frost": (6.44, 6.29, 7.11),
    "fog": (0.63, 0.74, 4.62), "brightness": (0.60, 1.66, 25.34), "contrast": (0.09, 0.21, 2.22),
    "elastic_transform": (1.10, 2.33, 36.23), "pixelate": (0.04, 0.12, 0.56),
    "jpeg_compression": (0.20, 0.28, 0.57),
    "speckle_noise": (0.11, 0.43, 4.11), "gaussian_blur": (0.17, 0.32, 3.65), "spatter": (0.41, 0.73, 5.25),
    "saturate": (0.54, 1.70, 24.09)}
PRESET_SIZES = {"cifar": (32, 0), "tiny": (64, 1), "imagenet": (224, 2)}


# The models `damp bench` times: (in_channels, image size, build kwargs). The small CNN and the MLP
# are those of the Fashion-MNIST presets (configs/fashion_mnist_small_cnn), ResNet-8 that of the
# converged suite (configs/fashion_mnist_resnet8); ResNet18 is the CIFAR one.
BENCH_MODELS = {"resnet18": (3, 32, {}), "resnet8": (1, 28, {"width": 32}), "small_cnn": (1, 28, {"width": 16}),
                "mlp": (1, 28, {})}
# Step-time targets on CPU (docs/performance.md): (ratio to SGD, whether it counts above the noise floor).
CPU_TARGETS = {"resnet18": {"damp": (0.05, True), "daap": (0.05, True), "sam": (2.10, False),
                            "asam": (2.10, False)},
               "small_cnn": {"damp": (1.10, False), "sam": (2.10, False)}, "mlp": {"damp": (0.10, True)}}


# Least seconds of SGD steps in one timing sample of damp bench's step-time ratios.
SAMPLE_SECONDS = 0.25


def bench_variants(device: torch.device, m: int) -> dict[str, methods.Method]:
    """The methods `damp bench` times against SGD: each with the executor "auto" picks, DAMP's ghost loop,
    and on CUDA DAMP in every whole-batch executor."""
    candidates = {name: build_variant(name, "auto", m) for name in HYPERPARAMETERS}
    candidates["damp_ghost"] = build_variant("damp", "ghost", m)  # per-sub-batch BatchNorm: the loop
    if device.type == "cuda":
        candidates.update({f"damp_{ex}": build_variant("damp", ex, m) for ex in WHOLE_BATCH_EXECUTORS})
    return candidates


def bench_model(model_name: str, device: torch.device, *, channels_last: bool = False,
                num_classes: int = 10) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """One of :data:`BENCH_MODELS` as `damp bench` times it (seed 0), with its Nesterov SGD optimizer."""
    if model_name not in BENCH_MODELS:
        raise ValueError(f"model {model_name!r} is not one of damp bench's models ({', '.join(BENCH_MODELS)})")
    in_channels, size, kwargs = BENCH_MODELS[model_name]
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=num_classes, in_channels=in_channels, image_size=size, **kwargs)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return model, optimizer


def step_time_ratios(model_name: str, batch: int, device: torch.device, *, m: int = 8, repeats: int = 5,
                     precision: str = "fp32", channels_last: bool = False,
                     variants: dict[str, methods.Method] | None = None) -> dict:
    """Median seconds per optimizer step of each method, its ratio to SGD's, the noise floor and peak memory.

    ``variants`` names the methods timed beside SGD (default ``bench_variants``). The noise floor is
    (SGD step + drawing the M x P noise DAMP draws) / SGD step, timed in the same round-robin as the
    methods: the least a DAMP step can cost. Ratios are paired per round.
    """
    model, optimizer = bench_model(model_name, device, channels_last=channels_last)
    in_channels, size, kwargs = BENCH_MODELS[model_name]
    x = training_batch(batch, in_channels, size, device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    dtype = autocast_dtype(precision)
    candidates = {"sgd": methods.SGD(), **(bench_variants(device, m) if variants is None else variants)}
    noise_source = build_variant("damp", "auto", m)
    selected = [p for _, p in noise_source.select_params(model)]
    steps = {name: (lambda method=method: train_step(model, optimizer, method, x, y, dtype))
             for name, method in candidates.items()}

    def floor_step() -> None:
        steps["sgd"]()
        noise_source.draw(selected, range(m), device)
    steps["sgd+noise"] = floor_step
    # A sample of a fast model is several steps, so timer and scheduler noise stay small against it.
    per_sample = max(1, math.ceil(SAMPLE_SECONDS / time_steps(steps["sgd"], 2, device)))
    times = round_robin_samples(steps, device, warmup=1, samples=repeats, steps_per_sample=per_sample)
    ratios = paired_ratios(times, "sgd")
    floor = ratios.pop("sgd+noise")
    seconds = {name: statistics.median(values) for name, values in times.items() if name != "sgd+noise"}
    peak = {name: peak_memory_mib(steps[name], device) for name in candidates}
    targets = {}
    if device.type == "cpu":
        for name, (value, above_floor) in CPU_TARGETS.get(model_name, {}).items():
            if name not in ratios:
                continue
            limit = floor + value if above_floor else value
            targets[name] = {"target": f"floor+{value:.2f}" if above_floor else f"{value:.2f}",
                             "limit": limit,
                             "ratio": ratios[name], "met": ratios[name] <= limit}
    chosen = settle(plan("auto", "whole", model, selected, device), model, x, m)  # what the steps ran
    return {"model": model_name, "batch": batch, "num_perturbations": m, "precision": precision,
            "image_size": size, "model_kwargs": kwargs,
            "parameters_perturbed": sum(p.numel() for p in selected),
            "damp_executor": describe(chosen),
            "seconds_per_step": seconds, "steps_per_sample": per_sample,
            "images_per_s": {k: batch / v for k, v in seconds.items()},
            "noise_floor": floor, "step_time_ratio": ratios, "peak_memory_mib": peak, "targets": targets}


def training_batch(batch: int, channels: int, size: int, device: torch.device) -> torch.Tensor:
    """A random (B, C, H, W) batch in the memory layout a training step sees: through the resident loader's
    crop (:func:`damp.data.augment.random_crop`), which leaves a one-channel batch with NHWC strides.

    PyTorch's convolutions follow that layout, and on a CPU it changes a step's time by up to 1.7 x
    (docs/performance.md, "Memory layout: what the bench times, and what training runs"), so the
    bench times the layout training runs.
    """
    x = torch.rand(batch, channels, size, size, device=device)
    return random_crop(x, 2, torch.rand(batch, 2, device=device))


def trainer_overhead(device: torch.device, steps: int = 60) -> dict:
    """Throughput of `damp train` against a hand-written loop on the same model, data and augmentation."""
    from damp.config import load_config
    from damp.data.build import build_data
    from damp.models import model_for
    from damp.optim import build_optimizer
    from damp.train import train

    interval = max(steps // 6, 1)
    overrides = ["data.name=digits", "model.name=small_cnn", "method.name=sgd", f"trainer.max_steps={steps}",
                 f"trainer.log_every={interval}", f"trainer.checkpoint_every={10 * steps}",
                 "eval.corruptions=none", "trainer.progress=false", f"trainer.device={device.type}"]
    cfg = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, tmp + "/run")
        rates = [json.loads(line)["images_per_s"] for line in open(tmp + "/run/timing.jsonl")]
    # The first interval includes the warm-up and the last one the final checkpoint write.
    trainer_rate = statistics.median(rates[1:-1])
    torch.manual_seed(cfg.seed)
    bundle = build_data(cfg, device=device)
    model = model_for(cfg, bundle).to(device)
    optimizer = build_optimizer(cfg.optim, model)
    rates, count = [], 0
    sync(device)
    start = time.perf_counter()
    while count < steps:
        for x, y in bundle.train:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            count += 1
            if count % interval == 0:
                sync(device)
                now = time.perf_counter()
                rates.append(interval * cfg.data.batch_size / (now - start))
                start = now
            if count >= steps:
                break
    bare_rate = statistics.median(rates[1:-1])
    return {"trainer_images_per_s": trainer_rate, "bare_loop_images_per_s": bare_rate,
            "trainer_vs_bare_loop": trainer_rate / bare_rate, "steps": steps}


def corruption_throughput(device: torch.device, presets: tuple[str, ...] = ("cifar", "tiny", "imagenet"),
                          batches: dict[str, int] | None = None, repeats: int = 1,
                          frost_dir: str | None = None) -> dict:
    """ms per image for all 5 severities of every corruption, per preset, and the speed-up over
    ``REFERENCE_MS``; ``images_per_s`` counts one corrupted image per (image, severity)."""
    batches = batches or {"cifar": 1000, "tiny": 250, "imagenet": 16}
    out = {}
    for preset in presets:
        size, column = PRESET_SIZES[preset]
        g = torch.Generator().manual_seed(0)
        coarse = torch.rand(batches[preset], 3, size // 4, size // 4, generator=g)
        x = (F.interpolate(coarse, size=(size, size), mode="bilinear") * 255).to(torch.uint8).to(device)
        rows, unavailable = {}, {}
        for name in corruptions.names():
            gen = torch.Generator(device=device).manual_seed(0)

            def run(name=name, gen=gen, x=x, preset=preset) -> None:
                for severity in SEVERITIES:
                    corruptions.corrupt(x, name, severity, preset=preset, generator=gen, frost_dir=frost_dir)
            try:
                ms = 1000 * median_time(run, repeats, device) / len(x)
            except FileNotFoundError as err:  # frost without textures: listed, not dropped silently
                unavailable[name] = str(err)
                continue
            reference = 5 * REFERENCE_MS[name][column]
            rows[name] = {"ms_per_image": ms, "reference_ms_per_image": reference, "speedup": reference / ms,
                          "images_per_s": 5000 / ms, "runs_on": runs_on(name)}
        total = sum(r["ms_per_image"] for r in rows.values())
        ref_total = sum(r["reference_ms_per_image"] for r in rows.values())
        out[preset] = {"size": size, "batch": len(x), "corruptions": rows, "unavailable": unavailable,
                       "total_ms_per_image": total, "reference_total_ms_per_image": ref_total,
                       "speedup": ref_total / total, "images_per_s": 1000 * 5 * len(rows) / total}
    return out


def evaluation_throughput(device: torch.device, model_name: str = "resnet18", images: int = 1000) -> dict:
    """Clean-evaluation images/s (eval mode, no grad, batches of 500) of a CIFAR-shaped model."""
    from damp.evaluate import evaluate_clean

    model = build_model(model_name, num_classes=10, in_channels=3, image_size=32).to(device)
    x = (torch.rand(images, 3, 32, 32) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (images,))
    seconds = median_time(lambda: evaluate_clean(model, x, y), 2, device)
    return {"model": model_name, "images": images, "images_per_s": images / seconds}


def run_bench(device: str = "cpu", quick: bool = False, progress: Callable[[str], None] | None = None
              ) -> dict:
    """Everything `damp bench` measures, as one JSON-ready dict."""
    dev = torch.device(device)
    say = progress or (lambda _: None)
    repeats = 3 if quick else 5
    results = {"device": str(dev), "cpu": platform.processor() or platform.machine(),
               "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
               "threads": torch.get_num_threads(), "torch": torch.__version__, "damp": __version__,
               "quick": quick, "models": {}}
    precision = "bf16" if dev.type == "cuda" else "fp32"
    for model_name in BENCH_MODELS:
        say(f"step time: {model_name}")
        results["models"][model_name] = step_time_ratios(model_name, 128, dev, repeats=repeats,
                                                         precision=precision,
                                                         channels_last=dev.type == "cuda")
    results["step_time_ratio"] = results["models"]["resnet18"]["step_time_ratio"]
    say("trainer overhead")
    results["trainer"] = trainer_overhead(dev, steps=30 if quick else 90)
    say("corruption throughput")
    presets = ("cifar",) if quick else ("cifar", "tiny", "imagenet")
    batches = {"cifar": 250, "tiny": 64, "imagenet": 8} if quick else None
    results["corruptions"] = corruption_throughput(dev, presets, batches)
    say("evaluation throughput")
    results["evaluation"] = evaluation_throughput(dev)
    return results


# ------------------------------------------------------------------------------ shared with the GPU suite
# What benchmarks/gpu_measure.py (the GPU suite's measurements) times with: the methods and their
# hyperparameters and one optimizer step (the clock itself is damp.timing's).

WHOLE_BATCH_EXECUTORS = ("fused", "split")  # the paper's math (synced BatchNorm): the candidates for a target
# The methods timed against SGD and their hyperparameters.
HYPERPARAMETERS = {"damp": {"std": 0.1, "seed": 0}, "daap": {"std": 0.01, "seed": 0}, "sam": {"rho": 0.05},
                   "asam": {"rho": 1.0}}
# Corruptions whose work stays on the host whatever the input's device: the reference's exact Pillow
# (libjpeg) codec, so each batch goes to the host and back (corruptions/digital.py).
HOST_CORRUPTIONS = {"jpeg_compression": "Pillow (libjpeg) JPEG encode/decode, as the reference"}


def runs_on(name: str) -> str:
    """"cpu" for a corruption in ``HOST_CORRUPTIONS``, else "device"."""
    return "cpu" if name in HOST_CORRUPTIONS else "device"


def build_variant(method: str, executor: str, m: int) -> methods.Method:
    """``method`` with the bench hyperparameters in one executor: "fused", "split", "ghost" or "auto"."""
    if method == "sgd":
        return methods.SGD()
    options = {"batchnorm": "ghost"} if executor == "ghost" else {"executor": executor}
    return methods.build(method, num_perturbations=m, **HYPERPARAMETERS[method], **options)


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, method: methods.Method,
               x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None) -> None:
    """One optimizer step as the trainer takes it (zero_grad, method.backward, step)."""
    optimizer.zero_grad(set_to_none=True)
    method.backward(net, x, y, F.cross_entropy, autocast_dtype=dtype)
    optimizer.step()
