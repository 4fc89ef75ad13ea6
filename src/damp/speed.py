"""`damp bench`: step-time ratios against SGD, trainer overhead, corruption and evaluation throughput.

Every ratio is measured within one run on one device: the methods are timed in turn, round after
round, and a ratio is the median over rounds of the two times of one round (``paired_ratios``).
Timings synchronise CUDA before reading the clock.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from damp import __version__, corruptions, methods
from damp.methods.subbatch import PerLayer, plan
from damp.models import build_model
from damp.corruptions import SEVERITIES
from damp.runtime import autocast_dtype

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


# The models `damp bench` times: (in_channels, image size, build kwargs). The small CNN and the MLP
# are those of the Fashion-MNIST presets (configs/fashion_mnist_small_cnn); ResNet18 is the CIFAR one.
BENCH_MODELS = {"resnet18": (3, 32, {}), "small_cnn": (1, 28, {"width": 16}), "mlp": (1, 28, {})}
# Step-time targets on CPU (docs/performance.md): (ratio to SGD, whether it counts above the noise floor).
CPU_TARGETS = {"resnet18": {"damp": (0.05, True), "daap": (0.05, True), "sam": (2.10, False), "asam": (2.10, False)},
               "small_cnn": {"damp": (1.10, False), "sam": (2.10, False)}, "mlp": {"damp": (0.10, True)}}


# Least seconds of SGD steps in one timing sample of damp bench's step-time ratios.
SAMPLE_SECONDS = 0.25


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so a step's resident peak is its own."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_mib(step: Callable[[], None], device: torch.device) -> float | None:
    """Peak memory of one call of ``step`` above the memory held before it, in MiB.

    CUDA: ``max_memory_allocated``. CPU: the resident set sampled every millisecond by a thread
    (Linux only; None elsewhere), after returning freed heap memory to the OS.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not os.path.exists("/proc/self/statm"):
        return None
    _trim_heap()
    before, peak, done = _resident_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.001)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        step()
    finally:
        done.set()
        sampler.join()
    return max(peak[0] - before, 0) / 2**20


def step_time_ratios(model_name: str, batch: int, device: torch.device, *, m: int = 8, repeats: int = 5,
                     precision: str = "fp32", channels_last: bool = False) -> dict:
    """Median seconds per optimizer step of each method, its ratio to SGD's, the noise floor and peak memory.

    The noise floor is (SGD step + drawing the M x P noise DAMP draws) / SGD step, timed in the same
    round-robin as the methods: the least a DAMP step can cost. Ratios are paired per round.
    """
    in_channels, size, kwargs = BENCH_MODELS[model_name]
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_channels=in_channels, image_size=size, **kwargs).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.rand(batch, in_channels, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    candidates = {name: build_variant(name, "auto", m) for name in ("sgd", *RATIO_TARGETS)}
    candidates["damp_ghost"] = build_variant("damp", "ghost", m)  # per-sub-batch BatchNorm: the loop
    if device.type == "cuda":
        candidates.update({f"damp_{ex}": build_variant("damp", ex, m) for ex in WHOLE_BATCH_EXECUTORS})
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
            limit = floor + value if above_floor else value
            targets[name] = {"target": f"floor+{value:.2f}" if above_floor else f"{value:.2f}", "limit": limit,
                             "ratio": ratios[name], "met": ratios[name] <= limit}
    chosen = plan("auto", "whole", model, selected, device)
    return {"model": model_name, "batch": batch, "num_perturbations": m, "precision": precision,
            "image_size": size, "model_kwargs": kwargs, "parameters_perturbed": sum(p.numel() for p in selected),
            "damp_executor": chosen.kernels if isinstance(chosen, PerLayer) else "loop",
            "seconds_per_step": seconds, "steps_per_sample": per_sample, "images_per_s": {k: batch / v for k, v in seconds.items()},
            "noise_floor": floor, "step_time_ratio": ratios, "peak_memory_mib": peak, "targets": targets}


def trainer_overhead(device: torch.device, steps: int = 60) -> dict:
    """Throughput of `damp train` against a hand-written loop on the same model, data and augmentation."""
    from damp.config import load_config
    from damp.data.build import build_data
    from damp.models import model_for
    from damp.optim import build_optimizer
    from damp.train import train

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
                          batches: dict[str, int] | None = None, repeats: int = 1,
                          frost_dir: str | None = None) -> dict:
    """ms per image for all 5 severities of every corruption, per preset, and the speed-up over
    ``REFERENCE_MS``; ``images_per_s`` counts one corrupted image per (image, severity)."""
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

            def run(name=name, gen=gen, x=x, preset=preset) -> None:
                for severity in SEVERITIES:
                    corruptions.corrupt(x, name, severity, preset=preset, generator=gen, frost_dir=frost_dir)
            try:
                ms = 1000 * _median_time(run, repeats, device) / len(x)
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
    for model_name in BENCH_MODELS:
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


# ------------------------------------------------------------------------------------------------ GPU suite
# The building blocks of benchmarks/gpu_suite.py (docs/performance.md, "GPU").

RATIO_TARGETS = {"damp": 1.05, "daap": 1.05, "sam": 2.05, "asam": 2.05}  # step time / SGD's, on one H100
THROUGHPUT_TARGET = 30_000  # ResNet18 SGD training images/s (bf16, channels_last, data on the GPU)
EXECUTOR_VARIANTS = ("fused", "split", "ghost")  # "ghost": per-sub-batch BatchNorm, run by the loop executor
WHOLE_BATCH_EXECUTORS = ("fused", "split")  # the paper's math (synced BatchNorm): the candidates for a target
HYPERPARAMETERS = {"damp": {"std": 0.1, "seed": 0}, "daap": {"std": 0.01, "seed": 0}, "sam": {"rho": 0.05},
                   "asam": {"rho": 1.0}}
# Corruptions whose work stays on the host whatever the input's device: the reference's exact Pillow
# (libjpeg) codec, so each batch goes to the host and back (corruptions/digital.py).
HOST_CORRUPTIONS = {"jpeg_compression": "Pillow (libjpeg) JPEG encode/decode, as the reference"}
CUDA_GRAPHS = ("not attempted: DAMP/DAAP create their noise generators per step (seeding.generator), which a "
               "captured graph would replay with frozen seeds unless each generator were registered with it")


def runs_on(name: str) -> str:
    """"cpu" for a corruption in ``HOST_CORRUPTIONS``, else "device"."""
    return "cpu" if name in HOST_CORRUPTIONS else "device"


def environment(device: torch.device) -> dict:
    """Device name, torch/CUDA/cuDNN versions and the host, for the record."""
    env = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "python": platform.python_version(), "damp": __version__, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "gpu": None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count())
    return env


def device_settings(device: torch.device) -> dict:
    """What every GPU measurement runs with: bf16 autocast and channels_last on CUDA, fp32 NCHW on CPU."""
    cuda = device.type == "cuda"
    return {"precision": "bf16" if cuda else "fp32", "channels_last": cuda, "cudnn_benchmark": cuda}


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """Let cuDNN autotune its kernels for the fixed shapes of a benchmark; restored afterwards."""
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def build_variant(method: str, executor: str, m: int) -> methods.Method:
    """``method`` with the bench hyperparameters in one executor: "fused", "split", "ghost" or "auto"."""
    if method == "sgd":
        return methods.SGD()
    options = {"batchnorm": "ghost"} if executor == "ghost" else {"executor": executor}
    return methods.build(method, num_perturbations=m, **HYPERPARAMETERS[method], **options)


def variant_names(executors: tuple[str, ...] = EXECUTOR_VARIANTS) -> list[str]:
    """"sgd", then "<method>_<executor>" for every target method and executor."""
    return ["sgd"] + [f"{name}_{executor}" for name in RATIO_TARGETS for executor in executors]


def _split_variant(name: str) -> tuple[str, str]:
    method, _, executor = name.partition("_")
    return method, executor or "auto"


def training_setup(model_name: str, batch: int, device: torch.device, *, image_size: int = 32,
                   num_classes: int = 10, channels_last: bool = False
                   ) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    """A freshly initialised model, its SGD optimizer and one random batch, all on ``device``."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=num_classes, in_channels=3, image_size=image_size)
    model = model.to(device).to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.rand(batch, 3, image_size, image_size, device=device).contiguous(memory_format=fmt)
    return model, optimizer, x, torch.randint(0, num_classes, (batch,), device=device)


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, method: methods.Method,
               x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None) -> None:
    """One optimizer step as the trainer takes it (zero_grad, method.backward, step)."""
    optimizer.zero_grad(set_to_none=True)
    method.backward(net, x, y, F.cross_entropy, autocast_dtype=dtype)
    optimizer.step()


def time_steps(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per call over ``steps`` back-to-back calls: one sync at each end, so the host may run ahead."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def round_robin_samples(steps: dict[str, Callable[[], None]], device: torch.device, *, warmup: int, samples: int,
                        steps_per_sample: int) -> dict[str, list[float]]:
    """Seconds per call of each step function, one sample per round, the functions timed in turn."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(samples):
        for name, step in steps.items():
            times[name].append(time_steps(step, steps_per_sample, device))
    return times


def round_robin(steps: dict[str, Callable[[], None]], device: torch.device, *, warmup: int, samples: int,
                steps_per_sample: int) -> dict[str, float]:
    """Median seconds per call of each step function, sampled in turn so drifts hit every one alike."""
    times = round_robin_samples(steps, device, warmup=warmup, samples=samples, steps_per_sample=steps_per_sample)
    return {name: statistics.median(values) for name, values in times.items()}


def paired_ratios(times: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """The median over rounds of each function's time over the baseline's in the same round.

    A machine that speeds up or slows down between rounds moves both times of a round alike, so
    the per-round ratio cancels it where a ratio of medians would not.
    """
    return {name: statistics.median(t / b for t, b in zip(values, times[baseline]))
            for name, values in times.items() if name != baseline}


def eager_step_times(model_name: str, batch: int, device: torch.device, *, m: int = 8, image_size: int = 32,
                     num_classes: int = 10, executors: tuple[str, ...] = EXECUTOR_VARIANTS, warmup: int = 2,
                     samples: int = 5, steps_per_sample: int = 1) -> dict:
    """Seconds per step of SGD and of every method in every executor, eager, timed round-robin."""
    settings = device_settings(device)
    dtype = autocast_dtype(settings["precision"])
    model, optimizer, x, y = training_setup(model_name, batch, device, image_size=image_size,
                                            num_classes=num_classes, channels_last=settings["channels_last"])
    variants = {name: build_variant(*_split_variant(name), m) for name in variant_names(executors)}
    steps = {name: (lambda method=method: train_step(model, optimizer, method, x, y, dtype))
             for name, method in variants.items()}
    with cudnn_benchmark(settings["cudnn_benchmark"]):
        seconds = round_robin(steps, device, warmup=warmup, samples=samples,
                              steps_per_sample=steps_per_sample)
    chosen = plan("auto", "whole", model, [p for _, p in methods.perturbed_parameters(model)], device)
    auto = chosen.kernels if isinstance(chosen, PerLayer) else "loop"
    return {"model": model_name, "batch": batch, "image_size": image_size, "num_classes": num_classes,
            "num_perturbations": m, **settings, "auto_executor": auto, "warmup": warmup, "samples": samples,
            "steps_per_sample": steps_per_sample, "seconds_per_step": seconds,
            "images_per_s": {k: batch / v for k, v in seconds.items()},
            "ratio_to_sgd": {k: v / seconds["sgd"] for k, v in seconds.items() if k != "sgd"}}


@contextlib.contextmanager
def recompile_limit(limit: int) -> Iterator[None]:
    """Bound dynamo's recompilations, so a method that retraces every step costs a few compiles, not eight."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    old = getattr(config, name)
    setattr(config, name, limit)
    try:
        yield
    finally:
        setattr(config, name, old)


def fresh_compile(model: torch.nn.Module, backend: str, mode: str | None = None) -> torch.nn.Module:
    """``torch.compile(model)`` from empty dynamo caches: every method patches the layers' forwards its own
    way, so each benchmark variant compiles on its own instead of eating the others' recompile limit."""
    import torch._dynamo

    torch._dynamo.reset()
    return torch.compile(model, backend=backend, mode=mode)


class _LimitHits(logging.Handler):
    """Counts dynamo's "hit config.recompile_limit" warnings: after one, that code runs eagerly."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "hit config." in str(record.msg)


@contextlib.contextmanager
def recompile_limit_hits() -> Iterator[_LimitHits]:
    """Within the block, ``.count`` is how many times dynamo gave up compiling a function."""
    logger = logging.getLogger("torch._dynamo.convert_frame")
    handler = _LimitHits()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _dynamo_counts() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"].get("unique_graphs", 0)),
            "graph_breaks": int(sum(counters["graph_break"].values()))}


def one_line(err: BaseException, limit: int = 400) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters (errors recorded as results)."""
    text = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return text[:limit]


def compiled_step_time(model: torch.nn.Module, optimizer: torch.optim.Optimizer, method: methods.Method,
                       x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None, device: torch.device, *,
                       backend: str = "inductor", mode: str | None = None, warmup: int = 3, samples: int = 5,
                       steps_per_sample: int = 1, max_compiles: int = 3) -> dict:
    """Seconds per step of ``method`` on ``torch.compile(model)``, with the compile time, the graphs each
    warm-up step compiled, the recompilations while timed and the graph breaks.

    ``steady`` is False when the last warm-up step or the timed ones still compiled, or when dynamo hit
    ``max_compiles`` and ran the rest eagerly (``recompile_limit_hits``): the method retraces every step.
    A failure is returned as a string.
    """
    record: dict = {"backend": backend, "mode": mode or "default", "recompile_limit": max_compiles}
    graphs = []
    try:
        with recompile_limit(max_compiles), recompile_limit_hits() as hits:
            net = fresh_compile(model, backend, mode)

            def step() -> None:
                train_step(net, optimizer, method, x, y, dtype)

            start = _dynamo_counts()
            for _ in range(max(warmup, 1)):
                before = _dynamo_counts()["graphs"]
                seconds = time_steps(step, 1, device)
                record.setdefault("first_step_s", seconds)  # includes the compilation
                graphs.append(_dynamo_counts()["graphs"] - before)
            warm = _dynamo_counts()
            times = [time_steps(step, steps_per_sample, device) for _ in range(samples)]
    except Exception as err:  # noqa: BLE001 - a compile failure is a result, never a crash of the suite
        record["error"] = one_line(err)
        return record
    end = _dynamo_counts()
    record.update(seconds_per_step=statistics.median(times), graphs_per_warmup_step=graphs,
                  recompiles_while_timed=end["graphs"] - warm["graphs"],
                  graph_breaks=end["graph_breaks"] - start["graph_breaks"], recompile_limit_hits=hits.count)
    # Known only after a second warm-up step: the first one always compiles.
    steady = graphs[-1] == 0 and record["recompiles_while_timed"] == 0 and not hits.count
    record["steady"] = steady if len(graphs) > 1 else None
    return record


def compiled_step_times(model_name: str, batch: int, device: torch.device, names: list[str], *, m: int = 8,
                        image_size: int = 32, num_classes: int = 10, backend: str = "inductor",
                        mode: str | None = None, warmup: int = 3, samples: int = 5, steps_per_sample: int = 1,
                        max_compiles: int = 3, deadline: float | None = None, reserve_s: float = 0.0) -> dict:
    """:func:`compiled_step_time` for each variant in ``names`` (in order), timed in blocks.

    A variant that would start less than ``reserve_s`` before ``deadline`` (a ``time.perf_counter()``
    value) is recorded as skipped: a compilation cannot be interrupted once begun.
    """
    settings = device_settings(device)
    dtype = autocast_dtype(settings["precision"])
    model, optimizer, x, y = training_setup(model_name, batch, device, image_size=image_size,
                                            num_classes=num_classes, channels_last=settings["channels_last"])
    variants: dict[str, dict] = {}
    with cudnn_benchmark(settings["cudnn_benchmark"]):
        for name in names:
            if deadline is not None and time.perf_counter() + reserve_s > deadline:
                variants[name] = {"skipped": "the suite's time budget was spent"}
                continue
            method = build_variant(*_split_variant(name), m)
            variants[name] = compiled_step_time(model, optimizer, method, x, y, dtype, device,
                                                backend=backend, mode=mode, warmup=warmup, samples=samples,
                                                steps_per_sample=steps_per_sample, max_compiles=max_compiles)
    seconds = {k: v["seconds_per_step"] for k, v in variants.items() if "seconds_per_step" in v}
    ratios = {k: v / seconds["sgd"] for k, v in seconds.items() if k != "sgd"} if "sgd" in seconds else {}
    return {"model": model_name, "batch": batch, "image_size": image_size, "num_perturbations": m, **settings,
            "variants": variants, "seconds_per_step": seconds, "ratio_to_sgd": ratios}


def best_ratios(seconds_by_mode: dict[str, dict[str, float]]) -> dict:
    """Per target method: its fastest whole-batch variant (any mode) over the fastest SGD (any mode).

    Args:
        seconds_by_mode: {"eager": {variant: s}, "compiled": {variant: s}}, variants as :func:`variant_names`.
    """
    sgd = [(s["sgd"], mode) for mode, s in seconds_by_mode.items() if "sgd" in s]
    if not sgd:
        return {}
    sgd_s, sgd_mode = min(sgd)
    out = {}
    for method, target in RATIO_TARGETS.items():
        candidates = [(s, f"{mode}:{name}") for mode, times in seconds_by_mode.items()
                      for name, s in times.items()
                      if _split_variant(name) in [(method, e) for e in WHOLE_BATCH_EXECUTORS]]
        if candidates:
            best_s, where = min(candidates)
            out[method] = {"ratio": best_s / sgd_s, "variant": where, "sgd_variant": f"{sgd_mode}:sgd",
                           "target": target, "met": best_s / sgd_s <= target}
    return out


def epochs_of_batches(loader, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches of a resident loader, epoch after epoch."""
    batches = (batch for epoch in itertools.count() for batch in _epoch(loader, epoch))
    return itertools.islice(batches, steps)


def _epoch(loader, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return iter(loader)


def _throughput_run(net: torch.nn.Module, optimizer: torch.optim.Optimizer, method: methods.Method, loader,
                    dtype: torch.dtype | None, channels_last: bool, warmup: int, steps: int,
                    device: torch.device) -> float:
    """Training images/s over ``steps`` loader batches after ``warmup`` (the loader's work included)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def run(count: int) -> None:
        for x, y in epochs_of_batches(loader, count):
            train_step(net, optimizer, method, x.contiguous(memory_format=fmt), y, dtype)

    run(warmup)
    seconds = time_steps(lambda: run(steps), 1, device)
    return steps * loader.batch_size / seconds


def training_throughput(device: torch.device, batch_sizes: tuple[int, ...], *,
                        method_names: tuple[str, ...] = ("sgd", "damp"), m: int = 8,
                        dataset_size: int = 50_000, warmup: int = 5, steps: int = 30,
                        compile_backend: str | None = None) -> dict:
    """ResNet18 training images/s on CIFAR-shaped uint8 data resident on ``device`` (the trainer's loader,
    on-device crop + flip), per batch size and method (auto executor); compiled when a backend is given."""
    from damp.data.augment import crop_flip
    from damp.data.resident import ResidentLoader

    settings = device_settings(device)
    dtype = autocast_dtype(settings["precision"])
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (dataset_size, 3, 32, 32), generator=gen, dtype=torch.uint8).to(device)
    labels = torch.randint(0, 10, (dataset_size,), generator=gen).to(device)
    rows: dict[str, dict[str, float | str]] = {}
    with cudnn_benchmark(settings["cudnn_benchmark"]):
        for batch in batch_sizes:
            loader = ResidentLoader(images, labels, batch, shuffle=True, drop_last=True, augment=crop_flip)
            for name in method_names:
                model, optimizer, _, _ = training_setup("resnet18", 1, device,
                                                        channels_last=settings["channels_last"])
                net = model if compile_backend is None else fresh_compile(model, compile_backend)
                method = build_variant(name, "auto", m)
                try:
                    rate = _throughput_run(net, optimizer, method, loader, dtype, settings["channels_last"],
                                           warmup, steps, device)
                except Exception as err:  # noqa: BLE001 - recorded, as for the compiled step times
                    rows.setdefault(str(batch), {})[name] = one_line(err)
                    continue
                rows.setdefault(str(batch), {})[name] = rate
    numbers = [v for row in rows.values() for k, v in row.items() if k == "sgd" and isinstance(v, float)]
    return {"model": "resnet18", **settings, "dataset_size": dataset_size, "augment": "crop_flip (on device)",
            "num_perturbations": m, "compiled": compile_backend, "warmup": warmup, "steps": steps,
            "images_per_s": rows, "best_sgd_images_per_s": max(numbers, default=None)}


def host_syncs(fn: Callable[[], object]) -> int:
    """How many synchronising CUDA calls ``fn`` makes (``.item()``, ``.tolist()``, host copies,
    ``nonzero``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def corruption_host_syncs(device: torch.device, batch: int = 250, frost_dir: str | None = None) -> dict:
    """Per corruption, the host syncs of all 5 severities on a CIFAR-shaped batch (CUDA only; else {})."""
    if device.type != "cuda":
        return {}
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    counts: dict[str, int | str] = {}
    for name in corruptions.names():
        gen = torch.Generator(device=device).manual_seed(0)
        try:
            counts[name] = host_syncs(lambda name=name, gen=gen: [corruptions.corrupt(
                x, name, s, preset="cifar", generator=gen, frost_dir=frost_dir) for s in SEVERITIES])
        except FileNotFoundError as err:
            counts[name] = one_line(err)
    return counts


def inference_seconds(model: torch.nn.Module, images: torch.Tensor, total: int, batch: int,
                      dtype: torch.dtype | None, channels_last: bool) -> float:
    """Seconds of eval-mode inference on ``total`` images, cycling through uint8 ``images`` in batches."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    device = images.device
    context = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    starts = itertools.cycle(range(0, len(images), batch))
    model.eval()

    def run(count: int) -> None:
        done = 0
        while done < count:
            xb = images[next(starts):][:min(batch, count - done)]
            model(xb.float().div_(255).contiguous(memory_format=fmt))
            done += len(xb)

    with torch.inference_mode(), context:
        run(min(batch, total))  # warm-up
        return time_steps(lambda: run(total), 1, device)


def cifar10c_cost(device: torch.device, *, images: int = 10_000, infer_images: int | None = None,
                  infer_batch: int = 1000, frost_dir: str | None = None) -> dict:
    """Time to generate CIFAR-10-C (10,000 x 19 x 5) with damp's chunked on-the-fly path against ResNet18
    inference on it, on random CIFAR-shaped uint8 data. Fewer images (quick runs) are scaled linearly."""
    from damp.corruptions.dataset import CHUNK, SEVERITIES, corrupted_chunks

    settings = device_settings(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images, 3, 32, 32), generator=gen, dtype=torch.uint8).to(device)
    seconds: dict[str, float] = {}
    unavailable: dict[str, str] = {}

    def generate(name: str, data: torch.Tensor, severities: tuple[int, ...]) -> None:
        for severity in severities:
            chunks = corrupted_chunks(data, name, severity, device=device, preset="cifar",
                                      frost_dir=frost_dir)
            for _ in chunks:
                pass

    for name in corruptions.names():
        try:
            generate(name, x[:8], (1,))  # warm-up: kernels, plans, textures
            seconds[name] = time_steps(lambda name=name: generate(name, x, SEVERITIES), 1, device)
        except FileNotFoundError as err:
            unavailable[name] = one_line(err)
    scale = 10_000 / images
    generation = scale * sum(seconds.values())
    model = build_model("resnet18", num_classes=10).to(device)
    model = model.to(memory_format=torch.channels_last) if settings["channels_last"] else model
    total = 95 * images if infer_images is None else infer_images
    with cudnn_benchmark(settings["cudnn_benchmark"]):
        infer = inference_seconds(model, x, total, infer_batch, autocast_dtype(settings["precision"]),
                                  settings["channels_last"]) * 10_000 * 95 / total
    per = {name: {"seconds": scale * s, "share": scale * s / generation, "runs_on": runs_on(name)}
           for name, s in seconds.items()}
    return {"images": 10_000, "measured_images": images, "inference_measured_images": total,
            "extrapolated": images != 10_000 or total != 95 * images, "chunk": CHUNK,
            **settings, "inference_batch": infer_batch, "generation_s": generation, "inference_s": infer,
            "generation_over_inference": generation / infer, "corruptions": per, "unavailable": unavailable,
            "cpu_fallbacks": {k: v for k, v in per.items() if v["runs_on"] == "cpu"}}


def check_targets(results: dict, models: tuple[str, ...] = ("resnet18", "resnet50")) -> dict:
    """Every GPU target (docs/performance.md, "Targets") against the suite's results: value, target and whether it was met.

    A target whose part was not measured (failed, skipped) is listed with value and met None.
    ``applies`` is False off CUDA: the targets are defined for one H100.
    """
    applies = results.get("environment", {}).get("device", "").startswith("cuda")
    out: dict[str, dict] = {}
    for model_name in models:
        part = results.get("step_time", {}).get(model_name, {})
        times = {mode: part.get(mode, {}).get("seconds_per_step", {}) for mode in ("eager", "compiled")}
        best = best_ratios(times)
        for method, target in RATIO_TARGETS.items():
            row = dict(best.get(method, {"ratio": None, "target": target, "met": None}))
            value = row.pop("ratio")
            out[f"{model_name}:{method}/sgd"] = {"value": value, **row, "applies": applies}
    rates = [p.get("best_sgd_images_per_s") for p in results.get("throughput", {}).values()]
    rate = max((r for r in rates if r is not None), default=None)
    met = None if rate is None else rate >= THROUGHPUT_TARGET
    out["resnet18:sgd_images_per_s"] = {"value": rate, "target": THROUGHPUT_TARGET, "met": met,
                                        "applies": applies}
    ratio = results.get("cifar10c", {}).get("generation_over_inference")
    out["cifar10c:generation_over_inference"] = {
        "value": ratio, "target": 1.0, "met": None if ratio is None else ratio <= 1.0,
        "complete": not results.get("cifar10c", {}).get("unavailable", True), "applies": applies}
    return out
