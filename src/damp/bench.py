"""`damp bench`: step-time ratios against SGD, trainer overhead, corruption and evaluation throughput.

Every ratio is measured within one run on one device, as the median over repeats after a warm-up
step. Timings synchronise CUDA before reading the clock.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from damp import __version__, corruptions, methods
from damp.methods.subbatch import plan
from damp.models import build_model

# Reference ms per image per severity: the hendrycks/robustness code timed on one core of this project's
# CI machine class (docs/corruptions.md, "Speed").
REFERENCE_MS = {
    "gaussian_noise": (0.10, 0.54, 9.10), "shot_noise": (0.25, 1.42, 16.26), "impulse_noise": (0.14, 0.41, 4.37),
    "defocus_blur": (0.24, 0.62, 5.45), "glass_blur": (15.32, 69.21, 1442.79), "motion_blur": (1.52, 4.78, 109.70),
    "zoom_blur": (4.51, 11.53, 98.50), "snow": (2.02, 4.28, 46.91), "frost": (6.44, 6.29, 7.11),
    "fog": (0.63, 0.74, 4.62), "brightness": (0.60, 1.66, 25.34), "contrast": (0.09, 0.21, 2.22),
    "elastic_transform": (1.10, 2.33, 36.23), "pixelate": (0.04, 0.12, 0.56), "jpeg_compression": (0.20, 0.28, 0.57),
    "speckle_noise": (0.11, 0.43, 4.11), "gaussian_blur": (0.17, 0.32, 3.65), "spatter": (0.41, 0.73, 5.25),
    "saturate": (0.54, 1.70, 24.09)}
PRESET_SIZES = {"cifar": (32, 0), "tiny": (64, 1), "imagenet": (224, 2)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_time_ratios(model_name: str, batch: int, device: torch.device, *, m: int = 8, repeats: int = 5,
                     precision: str = "fp32", channels_last: bool = False) -> dict:
    """Median seconds per optimizer step of each method, and its ratio to SGD's, on one model and batch."""
    in_channels, size = (1, 32) if model_name == "small_cnn" else (3, 32)
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_channels=in_channels, image_size=size).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.rand(batch, in_channels, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    candidates = {"sgd": methods.SGD(), "damp": methods.DAMP(0.1, m, seed=0), "daap": methods.DAAP(0.01, m, seed=0),
                  "sam": methods.SAM(0.05, m), "asam": methods.ASAM(1.0, num_perturbations=m),
                  # Every DAMP executor, whatever "auto" picks on this device (ghost BatchNorm: the loop).
                  "damp_fused": methods.DAMP(0.1, m, seed=0, executor="fused"),
                  "damp_split": methods.DAMP(0.1, m, seed=0, executor="split"),
                  "damp_ghost": methods.DAMP(0.1, m, seed=0, batchnorm="ghost")}
    def step(method) -> None:
        optimizer.zero_grad(set_to_none=True)
        method.backward(model, x, y, F.cross_entropy, autocast_dtype=dtype)
        optimizer.step()

    # Round-robin over the methods, so slow drifts of a shared machine hit every method alike.
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for name, method in candidates.items():
        step(method)  # warm-up
    for _ in range(repeats):
        for name, method in candidates.items():
            _sync(device)
            start = time.perf_counter()
            step(method)
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in samples.items()}
    executor = plan("auto", "whole", model, [p for _, p in methods.perturbed_parameters(model)], device)[0]
    return {"model": model_name, "batch": batch, "num_perturbations": m, "precision": precision,
            "damp_executor": executor, "seconds_per_step": seconds,
            "images_per_s": {k: batch / v for k, v in seconds.items()},
            "step_time_ratio": {k: v / seconds["sgd"] for k, v in seconds.items() if k != "sgd"}}


def trainer_overhead(device: torch.device, steps: int = 60) -> dict:
    """Throughput of `damp train` against a hand-written loop on the same model, data and augmentation."""
    from damp.config import load_config
    from damp.data.build import build_data
    from damp.optim import build_optimizer
    from damp.train import model_for, train

    interval = max(steps // 6, 1)
    overrides = ["data.name=digits", "model.name=small_cnn", "method.name=sgd", f"trainer.max_steps={steps}",
                 f"trainer.log_every={interval}", f"trainer.checkpoint_every={10 * steps}", "eval.corruptions=none",
                 "trainer.progress=false", f"trainer.device={device.type}"]
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
    _sync(device)
    start = time.perf_counter()
    while count < steps:
        for x, y in bundle.train:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            count += 1
            if count % interval == 0:
                _sync(device)
                now = time.perf_counter()
                rates.append(interval * cfg.data.batch_size / (now - start))
                start = now
            if count >= steps:
                break
    bare_rate = statistics.median(rates[1:-1])
    return {"trainer_images_per_s": trainer_rate, "bare_loop_images_per_s": bare_rate,
            "trainer_vs_bare_loop": trainer_rate / bare_rate, "steps": steps}


def corruption_throughput(device: torch.device, presets: tuple[str, ...] = ("cifar", "tiny", "imagenet"),
                          batches: dict[str, int] | None = None, repeats: int = 1) -> dict:
    """ms per image for all 5 severities of every corruption, per preset, and the speed-up over
    ``REFERENCE_MS``."""
    batches = batches or {"cifar": 1000, "tiny": 250, "imagenet": 16}
    out = {}
    for preset in presets:
        size, column = PRESET_SIZES[preset]
        g = torch.Generator().manual_seed(0)
        x = (F.interpolate(torch.rand(batches[preset], 3, size // 4, size // 4, generator=g), size=(size, size),
                           mode="bilinear") * 255).to(torch.uint8).to(device)
        rows, unavailable = {}, {}
        for name in corruptions.names():
            gen = torch.Generator(device=device).manual_seed(0)

            def run(name=name, gen=gen) -> None:
                for severity in range(1, 6):
                    corruptions.corrupt(x, name, severity, preset=preset, generator=gen)
            try:
                ms = 1000 * _median_time(run, repeats, device) / len(x)
            except FileNotFoundError as err:  # frost without textures: listed, not dropped silently
                unavailable[name] = str(err)
                continue
            reference = 5 * REFERENCE_MS[name][column]
            rows[name] = {"ms_per_image": ms, "reference_ms_per_image": reference, "speedup": reference / ms}
        total = sum(r["ms_per_image"] for r in rows.values())
        ref_total = sum(r["reference_ms_per_image"] for r in rows.values())
        out[preset] = {"size": size, "batch": len(x), "corruptions": rows, "unavailable": unavailable,
                       "total_ms_per_image": total, "reference_total_ms_per_image": ref_total,
                       "speedup": ref_total / total}
    return out


def evaluation_throughput(device: torch.device, model_name: str = "resnet18", images: int = 1000) -> dict:
    """Clean-evaluation images/s (eval mode, no grad, batches of 500) of a CIFAR-shaped model."""
    from damp.evaluate import evaluate_clean

    model = build_model(model_name, num_classes=10, in_channels=3, image_size=32).to(device)
    x = (torch.rand(images, 3, 32, 32) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (images,))
    seconds = _median_time(lambda: evaluate_clean(model, x, y), 2, device)
    return {"model": model_name, "images": images, "images_per_s": images / seconds}


def run_bench(device: str = "cpu", quick: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """Everything `damp bench` measures, as one JSON-ready dict."""
    dev = torch.device(device)
    say = progress or (lambda _: None)
    repeats = 3 if quick else 5
    results = {"device": str(dev), "cpu": platform.processor() or platform.machine(),
               "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
               "threads": torch.get_num_threads(), "torch": torch.__version__, "damp": __version__,
               "quick": quick, "models": {}}
    precision = "bf16" if dev.type == "cuda" else "fp32"
    for model_name in ("resnet18", "small_cnn"):
        say(f"step time: {model_name}")
        results["models"][model_name] = step_time_ratios(model_name, 128, dev, repeats=repeats, precision=precision,
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
