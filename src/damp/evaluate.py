"""Evaluation of a run's model with its clean weights: :func:`evaluate`, for `damp train`,
`damp evaluate`, the demo and sweeps; and the checks that fail fast before it.

Clean metrics, corruptions (generated on the fly or read from released -C files), FGSM and the
ImageNet variants, as one results dict (the results.json schema). Every metric streams through
the one engine, :mod:`damp.streaming` (also ``damp.benchmark``'s); the formulas are
:mod:`damp.metrics`'; the variants are :mod:`damp.variants`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from damp.checkpoint import find_checkpoint, load_checkpoint
from damp.config import config_from_dict, resolve_corruptions
from damp.corruptions import GROUPS, SEVERITIES
from damp.corruptions.assets import FrostUnavailable, find_frost_dir
from damp.corruptions.dataset import CHUNK, released_corruptions
from damp.data.build import build_data
from damp.metrics import UNITS, aggregate
from damp.models import model_for
from damp.pixels import to_unit_float
from damp.streaming import (check_c_dir, chunk_metrics, evaluate_c_dir, fgsm_error, stream_metrics,
                            tensor_batches)
from damp.variants import check_variants, variant_results


def evaluate(model: nn.Module, bundle, cfg, *, variants: dict[str, str] | None = None,
             imagenet_d_map: str | None = None, mce_baseline: str = "hendrycks", meta: dict | None = None,
             progress=None) -> dict:
    """Clean metrics plus the configured robustness evaluation of ``model`` (clean weights).

    Returns the results.json structure: {"clean", "corruptions", "summary", "fgsm", "variants", "meta"}.
    """
    e = cfg.eval
    x, y = next(iter(bundle.test))
    check_model(model, to_unit_float(x), y, bundle.num_classes)
    results: dict = {"clean": stream_metrics(model, bundle.test), "corruptions": {},
                     "summary": {}, "fgsm": [], "variants": {},
                     "meta": {"units": UNITS, "dataset": cfg.data.name, "model": cfg.model.name,
                              "method": cfg.method.name, **(meta or {})}}
    names = resolve_corruptions(e.corruptions)
    if names:
        results["corruptions"], source = corruption_results(model, bundle, cfg, names, e.severities, seed=e.seed,
                                                            c_dir=e.c_dir, progress=progress)
        results["meta"].update(source)
    results["summary"] = aggregate(results["corruptions"], cfg.data.name, mce_baseline)
    if e.fgsm:
        results["fgsm"] = fgsm_error(model, bundle.test, list(e.fgsm))
    results["variants"] = variant_results(model, bundle.classes, bundle.image_size, variants or {}, e.severities,
                                          imagenet_d_map)
    return results


PROBE_IMAGES = 2


def check_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> int:
    """One clear ValueError, before any long evaluation, if ``model`` cannot be evaluated on (x, y);
    else the number of classes K it predicts.

    Runs the model on the first images of x ((N, C, H, W) [0, 1] floats on its device) and checks
    that it returns finite (N, K) logits, with K = ``num_classes`` when given, and that the labels
    y (N,) are class indices below K.
    """
    probe, was_training = x[:PROBE_IMAGES], model.training
    model.eval()  # in train mode the probe would move BatchNorm's running statistics
    try:
        with torch.no_grad():
            logits = model(probe)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ValueError(f"model: fails on images of shape {tuple(probe.shape)} ({first}); does it take "
                         f"{probe.shape[1]}-channel {probe.shape[-2]}x{probe.shape[-1]} images?") from None
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != len(probe):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model: expected ({len(probe)}, classes) logits for {len(probe)} images, got {shape}")
    classes = logits.shape[1]
    if num_classes is not None and classes != num_classes:
        raise ValueError(f"model: returns {classes} logits per image, but the data has {num_classes} classes")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"model: returns non-finite logits (NaN or inf) on the first {len(probe)} images")
    check_labels(y, classes)
    return classes


def check_labels(y: torch.Tensor, classes: int) -> None:
    """A ValueError unless the labels (N,) are class indices in [0, classes) (one host sync)."""
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"labels: class indices must be in [0, {classes - 1}] for a model with {classes} "
                         f"outputs, got [{int(y.min())}, {int(y.max())}]")


def evaluate_clean(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500
                   ) -> dict[str, float]:
    """Metrics on clean images (uint8 or float [0, 1], (N, C, H, W)) on the model's device."""
    device = next(model.parameters()).device
    return stream_metrics(model, tensor_batches(images, labels, batch_size, device))


def evaluate_corruptions(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, names: Sequence[str],
                         severities: Sequence[int] = SEVERITIES, *, preset: str | None = None,
                         seed: int = 0, frost_dir: str | None = None, progress=None
                         ) -> dict[str, dict[str, dict[str, float]]]:
    """Corrupt the clean test set on the fly (seeded, batched on the model's device) and evaluate.

    Streams chunk by chunk (:func:`damp.streaming.chunk_metrics`), so the images are the ones
    ``damp corrupt`` writes with the same seed (up to the uint8 truncation of the files), and the
    numbers equal ``damp.benchmark``'s. ``progress`` is called with the images done after each chunk.

    Returns:
        ``{name: {str(severity): {"error", "nll", "ece"}}}``.
    """
    device = next(model.parameters()).device
    chunks = ((images[i:i + CHUNK].to(device), labels[i:i + CHUNK].to(device)) for i in range(0, len(labels), CHUNK))
    return chunk_metrics(model, chunks, names, severities, seed=seed, preset=preset, frost_dir=frost_dir,
                         clean=False, progress=progress).corruptions()


def runnable_corruptions(names: Sequence[str], frost_dir: str | None = None) -> tuple[list[str], dict[str, str]]:
    """Split corruption names into those that can run here and {name: reason} for the rest.

    Only frost depends on external files (its textures); benchmarks list it as unavailable rather than
    dropping it silently.
    """

    unavailable = {}
    if "frost" in names:
        try:
            find_frost_dir(frost_dir)
        except FrostUnavailable as err:
            unavailable["frost"] = str(err)
    return [n for n in names if n not in unavailable], unavailable


def corruption_results(model: nn.Module, bundle, cfg, names: Sequence[str], severities: Sequence[int], *,
                       seed: int, c_dir: str | None = None, progress=None) -> tuple[dict, dict]:
    """Corruption metrics from released files (``c_dir``) or generated on the fly, their aggregates,
    and meta entries naming the source and anything unavailable. Returns (results, meta)."""
    meta: dict = {}
    if c_dir is not None:
        present = released_corruptions(c_dir)
        unavailable = {n: f"not in {c_dir}" for n in names if n not in present}
        names = [n for n in names if n in present]
        corrupted = evaluate_c_dir(model, c_dir, names, severities, classes=bundle.classes, progress=progress,
                                   size=bundle.image_size)
        meta["corruption_source"] = f"released files in {Path(c_dir)}"
    else:
        if bundle.test_arrays is None:
            raise ValueError("corruptions on a folder dataset need released -C folders (--c-dir / eval.c_dir)")
        names, unavailable = runnable_corruptions(names, cfg.data.frost_dir)
        images, labels = bundle.test_arrays
        corrupted = evaluate_corruptions(model, images, labels, names, severities, seed=seed,
                                         frost_dir=cfg.data.frost_dir, progress=progress)
        meta["corruption_source"] = f"generated on the fly (damp.corruptions, seed {seed})"
    if unavailable:
        meta["unavailable_corruptions"] = unavailable
    return corrupted, meta


def _check_on_the_fly(cfg, names: Sequence[str]) -> None:

    if cfg.data.name == "imagenet":
        raise ValueError("eval.corruptions: ImageNet is a folder dataset; corruptions need released -C folders "
                         "(eval.c_dir / --c-dir)")
    # Frost named on its own, or a frost_dir given, must work; a group such as "all" without a
    # frost_dir evaluates frost where textures are found and otherwise lists it as unavailable.
    grouped = cfg.eval.corruptions == "all" or cfg.eval.corruptions in GROUPS
    if "frost" in names and (not grouped or cfg.data.frost_dir is not None):
        try:
            find_frost_dir(cfg.data.frost_dir)
        except FrostUnavailable as err:
            raise FrostUnavailable(f"eval.corruptions includes frost but {err} (config: data.frost_dir); "
                                   "or leave frost out of eval.corruptions") from None


def check_evaluation_inputs(cfg, variants: dict[str, str] | None = None, imagenet_d_map: str | None = None) -> None:
    """Fail fast: raise a one-line ValueError / FileNotFoundError if anything the evaluation of ``cfg``
    (a RunConfig) will need is missing, before any training or evaluation.

    Checks, without reading images: the released files of ``eval.c_dir`` (every requested corruption
    and severity), or for on-the-fly corruptions an in-memory test set and the frost textures; and the
    ImageNet variant folders of ``damp evaluate`` (``variants``: {flag name: folder}).
    """
    names = resolve_corruptions(cfg.eval.corruptions)
    if names and cfg.eval.c_dir is not None:
        check_c_dir(cfg.eval.c_dir, names, cfg.eval.severities)
    elif names:
        _check_on_the_fly(cfg, names)
    check_variants(cfg.data.name, cfg.eval.severities, variants or {}, imagenet_d_map)


def _saved_config(state: dict, *, corruptions, severities, c_dir, fgsm, seed, data_root, frost_dir):
    """The checkpoint's run config with `damp evaluate`'s overrides applied (None: keep the run's)."""
    cfg = config_from_dict(state["config"])
    e, d = cfg.eval, cfg.data
    e = replace(e, corruptions=e.corruptions if corruptions is None else corruptions, seed=seed,
                severities=tuple(severities or e.severities), c_dir=e.c_dir if c_dir is None else c_dir,
                fgsm=e.fgsm if fgsm is None else tuple(fgsm))
    d = replace(d, root=d.root if data_root is None else data_root,
                frost_dir=d.frost_dir if frost_dir is None else frost_dir)
    return replace(cfg, eval=e, data=d)


def _load_model(cfg, state: dict, ckpt: Path, bundle, device: str) -> nn.Module:
    model = model_for(cfg, bundle).to(device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"{ckpt}: weights do not fit the model of its config ({str(err).splitlines()[0]})") from None
    return model.eval()


def _saved_checkpoint(target: str | Path) -> tuple[Path, dict]:
    """The checkpoint file of a run directory (or the file itself) and its state."""
    path = Path(target)
    ckpt = find_checkpoint(path) if path.is_dir() else path
    if ckpt is None:
        raise FileNotFoundError(f"{path}: no checkpoint (last.pt) in this run directory")
    return ckpt, load_checkpoint(ckpt)


def load_saved_run(target: str | Path, device: str = "cpu", data_root: str | None = None):
    """(model in eval mode, config, test data bundle, checkpoint state) of a run directory or checkpoint."""
    ckpt, state = _saved_checkpoint(target)
    cfg = config_from_dict(state["config"])
    if data_root is not None:
        cfg = replace(cfg, data=replace(cfg.data, root=data_root))
    bundle = build_data(cfg, device=device, vit=cfg.model.name.startswith("vit"), need_train=False)
    return _load_model(cfg, state, ckpt, bundle, device), cfg, bundle, state


def evaluate_saved_run(target: str, *, corruptions: str | None = None, severities: Sequence[int] | None = None,
                       c_dir: str | None = None, fgsm: Sequence[float] | None = None, seed: int = 0,
                       device: str = "cpu", data_root: str | None = None, frost_dir: str | None = None,
                       variants: dict[str, str] | None = None, imagenet_d_map: str | None = None,
                       mce_baseline: str = "hendrycks", progress=None) -> dict:
    """Evaluate a run directory or checkpoint file with its clean weights; returns the results dict.

    ``variants``: {"a" | "sketch" | "drawing" | "cartoon" | "d" | "c_bar": folder}, keys of
    :data:`damp.variants.VARIANTS`. Every input is checked (:func:`check_evaluation_inputs`) before
    any image is read. ``mce_baseline``: a key of ``damp.metrics.MCE_BASELINES``.
    """
    ckpt, state = _saved_checkpoint(target)
    cfg = _saved_config(state, corruptions=corruptions, severities=severities, c_dir=c_dir, fgsm=fgsm, seed=seed,
                        data_root=data_root, frost_dir=frost_dir)
    check_evaluation_inputs(cfg, variants, imagenet_d_map)
    aggregate({}, cfg.data.name, mce_baseline)  # rejects an unknown baseline now, not after the evaluation
    bundle = build_data(cfg, device=device, vit=cfg.model.name.startswith("vit"), need_train=False)
    model = _load_model(cfg, state, ckpt, bundle, device)
    return evaluate(model, bundle, cfg, variants=variants, imagenet_d_map=imagenet_d_map, mce_baseline=mce_baseline,
                    meta={"checkpoint": str(ckpt), "step": int(state["step"])}, progress=progress)
