"""The GPU suite's measurements (benchmarks/gpu_suite.py; docs/performance.md, "GPU").

Step times per executor, eager and under ``torch.compile``; training throughput; host syncs of the
corruptions; CIFAR-10-C generation against inference; and the targets they are judged by. They time
with the building blocks of ``damp bench`` (:mod:`damp.speed`), so both measure a step the same way.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator

import torch

from damp import __version__, corruptions, methods
from damp.methods.subbatch import describe, plan, settle
from damp.models import build_model
from damp.runtime import autocast_dtype
from damp.corruptions import SEVERITIES
from damp.speed import WHOLE_BATCH_EXECUTORS, build_variant, runs_on, train_step
from damp.timing import round_robin_samples, time_steps

RATIO_TARGETS = {"damp": 1.05, "daap": 1.05, "sam": 2.05, "asam": 2.05}  # step time / SGD's, on one H100


THROUGHPUT_TARGET = 30_000  # ResNet18 SGD training images/s (bf16, channels_last, data on the GPU)


EXECUTOR_VARIANTS = ("fused", "split", "ghost")  # "ghost": per-sub-batch BatchNorm, run by the loop executor


CUDA_GRAPHS = ("not attempted: DAMP/DAAP create their noise generators per step (seeding.generator), which a "
               "captured graph would replay with frozen seeds unless each generator were registered with it")


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


def round_robin(steps: dict[str, Callable[[], None]], device: torch.device, *, warmup: int, samples: int,
                steps_per_sample: int) -> dict[str, float]:
    """Median seconds per call of each step function, sampled in turn so drifts hit every one alike."""
    times = round_robin_samples(steps, device, warmup=warmup, samples=samples,
                                steps_per_sample=steps_per_sample)
    return {name: statistics.median(values) for name, values in times.items()}


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
    chosen = settle(plan("auto", "whole", model, [p for _, p in methods.perturbed_parameters(model)], device),
                    model, x, m)
    auto = describe(chosen)
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
    """Every GPU target (docs/performance.md, "Targets") against the suite's results: value, target and
    whether it was met.

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
