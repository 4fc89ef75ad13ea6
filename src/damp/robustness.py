"""``damp.benchmark``: the corruption benchmark for any PyTorch classifier, without released -C files.

    results = damp.benchmark(model, images, labels, preset="cifar", fgsm=(2 / 255,))
    results["summary"]["mean_corruption_error"]

It generates the 19 corruptions x 5 severities on the fly, batched and seeded exactly as
`damp evaluate` and `damp corrupt` do (chunk b of corruption c at severity s always draws from the
seed f(seed, c, s, b), chunks of ``CHUNK`` images), so a tensor, the same images as an iterable of
batches of any size, and the CLI all give the same numbers. Metrics accumulate per chunk, so the test
set never has to fit in memory. The results dict is a damp run's results.json schema.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace

import torch
from torch import nn

from damp import __version__
from damp.config import load_config, resolve_corruptions
from damp.corruptions import PRESETS
from damp.corruptions._common import default_preset
from damp.corruptions.dataset import CHUNK, corrupt_chunk
from damp.data.build import build_data
from damp.evaluate import check_evaluation_inputs, check_labels, check_model, evaluate, runnable_corruptions
from damp.metrics import UNITS, aggregate
from damp.models import Normalized, model_for
from damp.models.user import load_weights
from damp.pixels import to_unit_float
from damp.corruptions import SEVERITIES
from damp.streaming import chunk_metrics, fgsm_results
from damp.timing import sync

# The dataset whose aggregates (heatmap columns, mCE) a preset's results follow.
PRESET_DATASETS = {"cifar": "cifar10", "tiny": "tiny_imagenet", "imagenet": "imagenet"}

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
_SEVERITY_RANGE = f"integers {SEVERITIES[0]}-{SEVERITIES[-1]}"


def benchmark(model: nn.Module, images: torch.Tensor | Batches, labels: torch.Tensor | None = None, *,
              preset: str | None = "cifar", corruptions: str | Sequence[str] = "all",
              severities: Sequence[int] = SEVERITIES, fgsm: Sequence[float] = (), batch_size: int = CHUNK,
              seed: int = 0, device: str | torch.device | None = None, frost_dir: str | None = None,
              dataset: str | None = None, mce_baseline: str = "hendrycks",
              progress: Callable[[int], None] | None = None) -> dict:
    """Clean, corrupted and FGSM metrics of ``model`` (in eval mode, its weights untouched).

    Args:
        model: takes (B, C, H, W) [0, 1] pixels, returns (B, K) logits (wrap it in
            :class:`damp.models.Normalized` if it expects normalised inputs).
        images: (N, C, H, W) uint8 or [0, 1] float tensor (or array) with ``labels`` (N,) class
            indices, or an iterable of (images, labels) batches of that kind (``labels`` then None).
            uint8 input is corrupted and re-quantised to uint8 as the reference's saved -C images
            are; float input stays float, so its numbers differ slightly.
        preset: the corruption constants, "cifar" (32 px), "tiny" (64 px) or "imagenet" (224 px); None
            picks by image size. A preset made for another size is refused.
        corruptions: "all", "common", "extra", "none", or names. A group skips frost when its
            textures are not found (``meta.unavailable_corruptions`` says so); frost named alone fails.
        fgsm: epsilons in [0, 1] pixel units.
        batch_size: images per forward pass; a chunk of ``CHUNK`` images (the corruption seeding unit)
            is the largest, whatever larger value is given.
        device: where corruption and inference run (default: the model's device).
        frost_dir: folder with the frost textures (default: the imagecorruptions package's).
        dataset: the dataset the aggregates follow (default: from the preset).
        progress: called with the number of images done after each chunk.

    Returns:
        {"clean", "corruptions": {name: {severity: metrics}}, "summary", "fgsm", "variants", "meta"}.
    """
    severities, fgsm = _checked_arguments(preset, batch_size, severities, fgsm)
    names, unavailable = _corruptions_to_run(corruptions, frost_dir)
    aggregate({}, dataset or "cifar10", mce_baseline)  # an unknown baseline fails now, not after the evaluation
    device = torch.device(device) if device is not None else _model_device(model)
    chunks = ((x.to(device), y.to(device)) for x, y in _chunks(images, labels))
    first = next(chunks, None)
    if first is None:
        raise ValueError("images: no images to evaluate")
    chosen = _check_preset(preset, first[0])
    classes = check_model(model, to_unit_float(first[0]), first[1])  # before any long work (labels too)

    def checked() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield first
        for x, y in chunks:
            check_labels(y, classes)
            yield x, y

    sums = chunk_metrics(model, checked(), names, severities, seed=seed, preset=chosen, frost_dir=frost_dir,
                         fgsm=fgsm, batch_size=batch_size, progress=progress)
    corrupted = sums.corruptions()
    dataset = dataset or PRESET_DATASETS[chosen]
    meta = {"units": UNITS, "dataset": dataset, "model": type(model).__name__, "method": None,
            "images": sums.images, "preset": chosen,
            "corruption_source": f"generated on the fly (damp.corruptions, seed {seed})", "damp_version": __version__}
    if unavailable:
        meta["unavailable_corruptions"] = unavailable
    return {"clean": sums.clean.result(), "corruptions": corrupted,
            "summary": aggregate(corrupted, dataset, mce_baseline),
            "fgsm": fgsm_results(sums.wrong, fgsm, sums.images), "variants": {}, "meta": meta}


def _checked_arguments(preset: str | None, batch_size: int, severities, fgsm) -> tuple[list[int], list[float]]:
    """:func:`benchmark`'s arguments checked before any work: (severities, fgsm epsilons) as lists."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset: {preset!r} is not one of {', '.join(PRESETS)} (or None: by image size)")
    if not 0 < batch_size:
        raise ValueError(f"batch_size: must be > 0, got {batch_size}")
    severities = _as_ints(severities, "severities")
    fgsm = [fgsm] if isinstance(fgsm, (int, float)) else list(fgsm)
    if any(s not in SEVERITIES for s in severities) or not severities:
        raise ValueError(f"severities: {_SEVERITY_RANGE}, got {severities}")
    if any(not 0 <= eps <= 1 for eps in fgsm):
        raise ValueError(f"fgsm: epsilons are in [0, 1] pixel units, got {fgsm}")
    return severities, fgsm


def _as_ints(values, name: str) -> list[int]:
    """Integers (numpy ones too) from a sequence; a one-line ValueError otherwise."""
    out = []
    for v in ([values] if isinstance(values, int) else values):
        if isinstance(v, bool) or int(v) != v:
            raise ValueError(f"{name}: {_SEVERITY_RANGE}, got {list(values)}")
        out.append(int(v))
    return out


def _corruptions_to_run(corruptions: str | Sequence[str], frost_dir: str | None) -> tuple[list[str], dict[str, str]]:
    """The corruptions to run and those skipped: a group skips frost without textures; a list naming it fails."""
    grouped = isinstance(corruptions, str) and "," not in corruptions
    names = resolve_corruptions(corruptions if isinstance(corruptions, str) else ",".join(corruptions))
    names, unavailable = runnable_corruptions(names, frost_dir)
    if unavailable and not grouped:
        raise ValueError(f"corruptions: {'; '.join(unavailable.values())}")
    return names, unavailable


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _check_preset(preset: str | None, x: torch.Tensor) -> str:
    size = default_preset(x.shape[-2], x.shape[-1])
    if preset is not None and preset != size:
        raise ValueError(f"preset: {preset!r} constants are for another image size than {x.shape[-2]}x{x.shape[-1]} "
                         f"px (that size takes {size!r}); pass preset={size!r} or preset=None")
    return size


def _chunks(images: torch.Tensor | Batches, labels: torch.Tensor | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Re-cut the input into ``CHUNK``-image chunks in order (the last may be shorter), checking shapes."""
    if not isinstance(images, torch.Tensor) and hasattr(images, "__array__") and hasattr(images, "shape"):
        images = torch.as_tensor(images)  # a numpy array
    if labels is not None and not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if isinstance(images, torch.Tensor):
        if labels is None:
            raise ValueError("labels: required with an images tensor")
        batches: Batches = [(images, labels)]
    elif labels is not None:
        raise ValueError("labels: pass None with an iterable of (images, labels) batches")
    else:
        batches = images
    pending_x: list[torch.Tensor] = []
    pending_y: list[torch.Tensor] = []
    count = 0
    for x, y in batches:
        _check_batch(x, y)
        pending_x.append(x)
        pending_y.append(y)
        count += len(y)
        while count >= CHUNK:
            xs, ys = torch.cat(pending_x), torch.cat(pending_y)
            yield xs[:CHUNK], ys[:CHUNK]
            pending_x, pending_y, count = [xs[CHUNK:]], [ys[CHUNK:]], len(ys) - CHUNK
    if count:
        yield torch.cat(pending_x), torch.cat(pending_y)


def _check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    """Shapes and dtypes of one (images, labels) batch; float pixels must be in [0, 1] (one host sync)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images: expected (N, C, H, W) with C in (1, 3), got {getattr(x, 'shape', type(x))}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ValueError(f"images: expected uint8 or float [0, 1] pixels, got {x.dtype}")
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"labels: expected ({len(x)},) class indices, got {getattr(y, 'shape', type(y))}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"labels: expected integer class indices, got {y.dtype}")
    if x.is_floating_point() and len(x) and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
        raise ValueError(f"images: float pixels must be in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}] "
                         "(pass uint8, or divide by 255; normalisation belongs inside the model)")


def throughput(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, preset: str | None = None,
               corruptions: str = "all", severities: Sequence[int] = SEVERITIES, batch_size: int = CHUNK,
               device: str | torch.device | None = None, frost_dir: str | None = None) -> dict:
    """Benchmark speed on ``images``: the time to generate every corrupted variant, the time to run the
    model on them, and images x variants per second for the whole benchmark (generation + inference).

    Returns {"variants", "images", "generation_s", "inference_s", "images_x_variants_per_s",
    "generation_over_inference"}.
    """
    names, _ = _corruptions_to_run(corruptions, frost_dir)
    if not names:
        raise ValueError("corruptions: nothing to generate (none given, or none available here)")
    device = torch.device(device) if device is not None else _model_device(model)
    chunks = [(x.to(device), y.to(device)) for x, y in _chunks(images, labels)]
    preset = _check_preset(preset, chunks[0][0])
    generated: list[torch.Tensor] = []
    sync(device)
    start = time.perf_counter()
    for name in names:
        for severity in severities:
            for index, (x, _) in enumerate(chunks):
                generated.append(corrupt_chunk(x, name, severity, index, preset=preset, frost_dir=frost_dir))
    sync(device)
    generation = time.perf_counter() - start
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for xc in generated:
            for s in range(0, len(xc), batch_size):
                model(to_unit_float(xc[s:s + batch_size]))
    sync(device)
    inference = time.perf_counter() - start
    model.train(was_training)
    variants, n = len(names) * len(severities), len(images)
    return {"variants": variants, "images": n, "generation_s": generation, "inference_s": inference,
            "images_x_variants_per_s": variants * n / (generation + inference),
            "generation_over_inference": generation / inference}


def evaluate_factory_model(model_path: str, data: str, *, weights: str | None = None, data_root: str | None = None,
                           sets: Sequence[str] = (), corruptions: str = "all",
                           severities: Sequence[int] = SEVERITIES, fgsm: Sequence[float] = (), seed: int = 0,
                           device: str = "cpu", frost_dir: str | None = None, c_dir: str | None = None,
                           mce_baseline: str = "hendrycks", progress: Callable[[int], None] | None = None) -> dict:
    """`damp evaluate --model MODULE:FACTORY --data NAME`: a model damp never trained, on a damp dataset's
    test split, with the protocol and results schema of a damp run.

    The model is built as ``model.name: MODULE:FACTORY`` is in training (``sets`` are config overrides
    such as ``model.kwargs.depth=2`` or ``model.normalize=true``), then ``weights`` (a state dict or a
    checkpoint holding one) is loaded into it. On-the-fly corruptions go through :func:`benchmark`,
    so the numbers equal the Python API's; released files (``c_dir``) through :func:`damp.evaluate.evaluate`.
    """
    overrides = [f"data.name={data}", f"model.name={model_path}", *sets]
    cfg = load_config(None, overrides)
    cfg = replace(cfg, data=replace(cfg.data, root=data_root if data_root is not None else cfg.data.root,
                                    frost_dir=frost_dir),
                  eval=replace(cfg.eval, corruptions=corruptions, severities=tuple(severities), fgsm=tuple(fgsm),
                               seed=seed, c_dir=c_dir))
    if cfg.data.name != "imagenet" or c_dir is not None:
        check_evaluation_inputs(cfg)
    bundle = build_data(cfg, device=device, need_train=False)
    model = model_for(cfg, bundle)
    if weights is not None:
        load_weights(model.model if isinstance(model, Normalized) else model, weights)
    model = model.to(device).eval()
    if c_dir is not None:
        return evaluate(model, bundle, cfg, mce_baseline=mce_baseline,
                        meta={"model": model_path, "weights": weights})
    source = bundle.test_arrays if bundle.test_arrays is not None else bundle.test
    images, labels = source if bundle.test_arrays is not None else (source, None)
    results = benchmark(model, images, labels, preset=None, corruptions=corruptions, severities=severities,
                        fgsm=fgsm, seed=seed, device=device, frost_dir=frost_dir, dataset=cfg.data.name,
                        mce_baseline=mce_baseline, progress=progress)
    results["meta"].update({"model": model_path, "weights": weights, "method": None})
    if bundle.test_arrays is None:  # a folder dataset: corrupted after the loader's resize and centre crop
        results["meta"]["corruption_source"] += (" from the resized, centre-cropped test images (the released -C "
                                                 "folders are also JPEG-compressed; --c-dir evaluates those)")
    return results
