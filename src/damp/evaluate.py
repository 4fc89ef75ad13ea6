"""Evaluation: clean and corrupted error (%), NLL and 15-bin ECE (%), always with the clean weights."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from damp.corruptions.dataset import CHUNK, corrupted_chunks

ECE_BINS = 15  # as the official DAMP code's test_model (ECE is not reported in the paper)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS
                           ) -> dict[str, float]:
    """Top-1 error (%), mean NLL (nats) and expected calibration error (%, ``bins`` equal-width bins).

    Args:
        logits: (N, K) float.
        labels: (N,) int64.

    >>> m = classification_metrics(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]))
    >>> m["error"]
    50.0
    """
    logits = logits.float()
    probs = logits.softmax(-1)
    confidence, prediction = probs.max(-1)
    correct = (prediction == labels).float()
    nll = F.cross_entropy(logits, labels).item()
    edges = torch.linspace(0, 1, bins + 1, device=logits.device)
    which = torch.bucketize(confidence, edges[1:-1], right=False)  # bin i covers (edge_i, edge_i+1]
    gap = torch.zeros(bins, device=logits.device).index_add_(0, which, confidence - correct)
    ece = gap.abs().sum() / max(len(labels), 1)
    return {"error": 100.0 * (1.0 - correct.mean().item()), "nll": nll, "ece": 100.0 * ece.item()}


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated (logits, labels) of ``model`` in eval mode over an iterable of (x, y) batches."""
    was_training = model.training
    model.eval()
    try:
        outs, ys = [], []
        for x, y in batches:
            outs.append(model(x).float())
            ys.append(y)
        return torch.cat(outs), torch.cat(ys)
    finally:
        model.train(was_training)


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device):
    for i in range(0, len(labels), batch_size):
        x = images[i:i + batch_size].to(device)
        yield (x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()), labels[i:i + batch_size].to(device)


def evaluate_clean(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500
                   ) -> dict[str, float]:
    """Metrics on clean images (uint8 or float [0, 1], (N, C, H, W)) on the model's device."""
    device = next(model.parameters()).device
    return classification_metrics(*predict(model, _batches(images, labels, batch_size, device)))


def evaluate_corruptions(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, names: Sequence[str],
                         severities: Sequence[int] = (1, 2, 3, 4, 5), *, preset: str | None = None,
                         seed: int = 0, frost_dir: str | None = None, progress=None
                         ) -> dict[str, dict[str, dict[str, float]]]:
    """Corrupt the clean test set on the fly (seeded, batched on the model's device) and evaluate.

    Uses :func:`damp.corruptions.dataset.corrupted_chunks`, so the images are the ones
    ``damp corrupt`` writes with the same seed (up to the uint8 truncation of the files).

    Returns:
        ``{name: {str(severity): {"error", "nll", "ece"}}}``.
    """
    device = next(model.parameters()).device
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        results[name] = {}
        for severity in severities:
            chunks = corrupted_chunks(images, name, severity, seed=seed, device=device, preset=preset,
                                      frost_dir=frost_dir)
            batches = ((x if x.is_floating_point() else x.float() / 255,
                        labels[i * CHUNK:i * CHUNK + len(x)].to(device)) for i, x in enumerate(chunks))
            results[name][str(severity)] = classification_metrics(*predict(model, batches))
            if progress is not None:
                progress(name, severity)
    return results


def summarize(results: dict[str, dict[str, dict[str, float]]]) -> dict:
    """The paper's aggregates: per-severity mean error over corruptions, and the overall mean."""
    names = list(results)
    severities = sorted({s for r in results.values() for s in r}, key=int)
    per_severity = {s: sum(results[n][s]["error"] for n in names) / len(names) for s in severities}
    return {"mean_corruption_error": sum(per_severity.values()) / max(len(per_severity), 1),
            "severity_error": per_severity}


def available(names: Sequence[str], frost_dir: str | None = None) -> tuple[list[str], dict[str, str]]:
    """Split corruption names into those that can run here and {name: reason} for the rest.

    Only frost depends on external files (its textures); benchmarks list it as unavailable rather than
    dropping it silently.
    """
    from damp.corruptions.assets import FrostUnavailable, find_frost_dir

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
        from damp.corruptions.dataset import available_corruptions
        present = available_corruptions(c_dir)
        unavailable = {n: f"not in {c_dir}" for n in names if n not in present}
        names = [n for n in names if n in present]
        corrupted = evaluate_c_dir(model, c_dir, names, severities, classes=bundle.classes, progress=progress,
                                   size=bundle.image_size)
        meta["corruption_source"] = f"released files in {Path(c_dir)}"
    else:
        if bundle.test_arrays is None:
            raise ValueError("corruptions on a folder dataset need released -C folders (--c-dir / eval.c_dir)")
        names, unavailable = available(names, cfg.data.frost_dir)
        images, labels = bundle.test_arrays
        corrupted = evaluate_corruptions(model, images, labels, names, severities, seed=seed,
                                         frost_dir=cfg.data.frost_dir, progress=progress)
        meta["corruption_source"] = f"generated on the fly (damp.corruptions, seed {seed})"
    if unavailable:
        meta["unavailable_corruptions"] = unavailable
    return corrupted, meta


def evaluate_run(model: nn.Module, bundle, cfg) -> dict:
    """Clean metrics plus the configured robustness evaluation of a trained model (clean weights).

    Returns the results.json structure: {"clean", "corruptions", "summary", "fgsm", "meta"}.
    """
    from damp.config import resolve_corruptions

    e = cfg.eval
    results: dict = {"clean": classification_metrics(*predict(model, bundle.test)), "corruptions": {},
                     "summary": {}, "fgsm": [],
                     "meta": {"units": {"error": "%", "ece": "% (15 bins)", "nll": "nats"},
                              "dataset": cfg.data.name, "model": cfg.model.name}}
    names = resolve_corruptions(e.corruptions)
    if names:
        results["corruptions"], meta = corruption_results(model, bundle, cfg, names, e.severities, seed=e.seed,
                                                          c_dir=e.c_dir)
        results["meta"].update(meta)
        results["summary"] = aggregate(results["corruptions"], cfg.data.name)
    if e.fgsm:
        results["fgsm"] = fgsm_error(model, bundle.test, e.fgsm)
    return results


# AlexNet mean error (%) over the 5 severities per ImageNet-C corruption, the mCE normaliser of
# Hendrycks & Dietterich (ICLR 2019): full 50k-image sets, the values hendrycks/robustness publishes
# (also used by google-research/augmix). Canonical; ``mCE_alexnet`` uses these.
ALEXNET_ERRORS = {"gaussian_noise": 88.6428, "shot_noise": 89.4468, "impulse_noise": 92.2640,
                  "defocus_blur": 81.9880, "glass_blur": 82.6268, "motion_blur": 78.5948, "zoom_blur": 79.8360,
                  "snow": 86.6816, "frost": 82.6572, "fog": 81.9324, "brightness": 56.4592, "contrast": 85.3204,
                  "elastic_transform": 64.6056, "pixelate": 71.7840, "jpeg_compression": 60.6500}
# RobustBench's stored AlexNet row, measured on its fixed 5000-image ImageNet-C subset. Only for
# comparing with RobustBench numbers (``aggregate(..., alexnet="robustbench-5k")``).
ALEXNET_ERRORS_ROBUSTBENCH_5K = {
    "gaussian_noise": 88.16, "shot_noise": 88.83, "impulse_noise": 91.72, "defocus_blur": 82.20,
    "glass_blur": 83.08, "motion_blur": 78.72, "zoom_blur": 79.57, "snow": 86.80, "frost": 83.15, "fog": 82.36,
    "brightness": 55.85, "contrast": 85.43, "elastic_transform": 64.80, "pixelate": 71.86, "jpeg_compression": 60.68}
# --mce-baseline choice -> (AlexNet table, summary key, protocol label)
MCE_BASELINES = {
    "hendrycks": (ALEXNET_ERRORS, "mCE_alexnet",
                  "ImageNet-C mCE normalised by AlexNet (Hendrycks & Dietterich, full 50k sets)"),
    "robustbench-5k": (ALEXNET_ERRORS_ROBUSTBENCH_5K, "mCE_alexnet_robustbench_5k",
                       "ImageNet-C mCE normalised by RobustBench's AlexNet row (its 5000-image subset)")}
IMAGENET_C_BAR = ("blue_noise_sample", "brownish_noise", "caustic_refraction", "checkerboard_cutout",
                  "cocentric_sine_waves", "inverse_sparkles", "perlin_noise", "plasma_noise",
                  "single_frequency_greyscale", "sparkles")


def fgsm_error(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], epsilons: Sequence[float]
               ) -> list[dict[str, float]]:
    """Top-1 error (%) under one-step FGSM for each epsilon (paper Tables 1-3: eps = 2/224).

    One signed-gradient step of the summed cross-entropy on the true labels, in [0, 1] pixel space
    (normalisation is inside the model, and its positive std keeps the gradient's sign), clipped to
    [0, 1], model in eval mode. All epsilons share one gradient per batch.
    """
    was_training = model.training
    model.eval()
    wrong = torch.zeros(len(epsilons))
    total = 0
    try:
        for x, y in batches:
            x = x.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(model(x).float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                for i, eps in enumerate(epsilons):
                    adversarial = (x + eps * grad.sign()).clamp_(0, 1)
                    wrong[i] += (model(adversarial).argmax(-1) != y).sum().cpu()
            total += len(y)
    finally:
        model.train(was_training)
    return [{"eps": float(eps), "error": 100.0 * float(w) / max(total, 1)} for eps, w in zip(epsilons, wrong)]


def aggregate(results: dict[str, dict[str, dict[str, float]]], dataset: str, alexnet: str = "hendrycks") -> dict:
    """Every aggregate we report, each labelled by its protocol ({} when there are no results).

    - ``mean_corruption_error`` / ``severity_error``: per-severity mean over the corruptions present,
      then the mean over severities (the DAMP paper's protocol, 19 corruptions on CIFAR/Tiny).
    - ``mean_error_15x5``: mean over the 15 common corruptions x 5 severities (RobustBench,
      ImageNet-C as the paper reports it), when all 75 are present.
    - ``mCE_alexnet``: ImageNet-C mean over the 15 of sum_s E / sum_s E_AlexNet (in %), with the
      canonical Hendrycks & Dietterich AlexNet errors, when all 75 are present and the dataset is
      ImageNet; ``alexnet="robustbench-5k"`` gives ``mCE_alexnet_robustbench_5k`` instead.
    """
    from damp.corruptions import names as corruption_names

    if alexnet not in MCE_BASELINES:
        raise ValueError(f"mCE baseline {alexnet!r} is not one of {', '.join(MCE_BASELINES)}")
    if not results:
        return {}
    table, mce_key, mce_label = MCE_BASELINES[alexnet]
    out = summarize(results)
    common = corruption_names("common")
    full = all(n in results and all(str(s) in results[n] for s in range(1, 6)) for n in common)
    if full:
        out["mean_error_15x5"] = sum(results[n][str(s)]["error"] for n in common for s in range(1, 6)) / 75
        if dataset == "imagenet":
            ce = [sum(results[n][str(s)]["error"] for s in range(1, 6)) / (5 * table[n]) for n in common]
            out[mce_key] = 100.0 * sum(ce) / len(ce)
    out["protocols"] = {"mean_corruption_error": f"per-severity mean over {len(results)} corruptions (DAMP paper)",
                        "mean_error_15x5": "mean over 15 common corruptions x 5 severities (RobustBench / IN-C)",
                        mce_key: mce_label}
    return out


def evaluate_c_dir(model: nn.Module, c_dir: str, names: Sequence[str], severities: Sequence[int], *,
                   batch_size: int = 250, classes: list[str] | None = None, progress=None,
                   transform: str = "native", size: int | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate on released -C files: CIFAR-10/100-C `.npy` or -C folders.

    Folder images go through :func:`folder_batches` with ``transform``: "native" for Tiny-ImageNet-C /
    ImageNet-C (as stored, no crop, as the official DAMP code; resized only if not ``size``), "center"
    (the clean-eval crop, as the official code decodes it) for ImageNet-C-bar (paper Table 1, IN-C-bar).
    """

    from damp.corruptions.dataset import read_array_c, read_folder_c

    device = next(model.parameters()).device
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        results[name] = {}
        for severity in severities:
            if (Path(c_dir) / f"{name}.npy").is_file():
                images, labels = read_array_c(c_dir, name, severity)
                batches = _batches(images, labels, batch_size, device)
            else:
                samples, _ = read_folder_c(c_dir, name, severity, classes)
                batches = folder_batches(samples, batch_size, device, size, transform)
            results[name][str(severity)] = classification_metrics(*predict(model, batches))
            if progress is not None:
                progress(name, severity)
    return results


def folder_batches(samples, batch_size: int, device: torch.device, size: int | None = None,
                   transform: str = "native"):
    """Batches of decoded folder images: "native" (as stored, resized only if sizes differ from
    ``size``), "center" (clean-eval 224/256 centre crop) or "resize256" (256x256 then centre 224)."""
    from damp.data.folders import load_rgb, to_tensor_u8
    from damp.data.pil_augment import center_crop_eval

    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images = []
        for path, _ in chunk:
            im = load_rgb(path)
            if transform == "center":
                im = center_crop_eval(im, size or 224)
            elif transform == "resize256":  # IN-A / Sketch: bicubic 256x256 (aspect not kept), centre 224
                im = im.resize((256, 256), 3).crop((16, 16, 240, 240))
            elif size is not None and im.size != (size, size):
                im = im.resize((size, size), 3)
            images.append(to_tensor_u8(im))
        x = torch.stack(images).to(device).float() / 255
        yield x, torch.tensor([label for _, label in chunk], device=device)


def evaluate_variant(model: nn.Module, root: str, classes: list[str], *, transform: str, mask: bool = False,
                     mapping: dict[str, list[int]] | None = None, batch_size: int = 100, size: int = 224
                     ) -> dict[str, float]:
    """Error (%) on an ImageNet variant folder ``root/<wnid or class>/<file>``.

    ``mask``: restrict the logits to the classes present (ImageNet-A's 200-class protocol, applied to
    every model family as the paper's numbers imply). ``mapping``: a folder class -> list of
    ImageNet-1k indices (ImageNet-D); a prediction is correct if it is any of them.
    """

    from damp.data.folders import scan_class_folders

    device = next(model.parameters()).device
    present = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
    if mapping is None:
        unknown = [c for c in present if c not in classes]
        if unknown:
            raise ValueError(f"{root}: class folders {unknown[:3]} are not among the model's classes")
        samples, _ = scan_class_folders(root, classes)
    else:
        samples, _ = scan_class_folders(root, present)
    logits, labels = predict(model, folder_batches(samples, batch_size, device, size, transform))
    if mask:
        allowed = torch.tensor([classes.index(c) for c in present], device=logits.device)
        keep = torch.full_like(logits, float("-inf"))
        keep[:, allowed] = 0
        logits = logits + keep
    prediction = logits.argmax(-1)
    if mapping is not None:
        table = torch.full((len(present), 3), -1, dtype=torch.long, device=logits.device)
        for i, c in enumerate(present):
            ids = [int(v) for v in mapping[c] if int(v) >= 0][:3]
            table[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        correct = (table[labels] == prediction[:, None]).any(1)
    else:
        correct = prediction == labels
    return {"error": 100.0 * (1 - correct.float().mean().item()), "images": len(labels)}


def _c_dir_severities(root: Path, name: str) -> list[int]:
    """Severities stored for ``name`` in a -C directory (either layout); [] if it is absent."""
    import json

    if (root / f"{name}.npy").is_file():
        if not (root / "labels.npy").is_file():
            return []
        meta = root / "meta.json"
        try:
            return list(json.loads(meta.read_text())["severities"]) if meta.is_file() else [1, 2, 3, 4, 5]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{meta}: not a damp meta.json (no severities list)") from None
    folder = root / name
    return [s for s in range(1, 6) if (folder / str(s)).is_dir()] if folder.is_dir() else []


def check_c_dir(c_dir: str, names: Sequence[str], severities: Sequence[int], what: str = "eval.c_dir") -> None:
    """Raise FileNotFoundError unless ``c_dir`` holds every (corruption, severity) asked for."""
    root = Path(c_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{what}: {root} is not a directory")
    missing = [f"{n}/{s}" for n in names for s in severities if s not in _c_dir_severities(root, n)]
    if missing:
        shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
        raise FileNotFoundError(f"{what}: {root} lacks {len(missing)} of the {len(names) * len(severities)} "
                                f"requested corruption/severity sets ({shown}); narrow the corruptions or "
                                "severities, or complete the folder")


def _check_on_the_fly(cfg, names: Sequence[str]) -> None:
    from damp.corruptions.assets import FrostUnavailable, find_frost_dir

    if cfg.data.name == "imagenet":
        raise ValueError("eval.corruptions: ImageNet is a folder dataset; corruptions need released -C folders "
                         "(eval.c_dir / --c-dir)")
    # Frost named on its own, or a frost_dir given, must work; a group such as "all" without a
    # frost_dir evaluates frost where textures are found and otherwise lists it as unavailable.
    grouped = cfg.eval.corruptions in ("all", "common", "extra", "noise", "blur", "weather", "digital")
    if "frost" in names and (not grouped or cfg.data.frost_dir is not None):
        try:
            find_frost_dir(cfg.data.frost_dir)
        except FrostUnavailable as err:
            raise FrostUnavailable(f"eval.corruptions includes frost but {err} (config: data.frost_dir); "
                                   "or leave frost out of eval.corruptions") from None


def _check_variants(cfg, variants: dict[str, str], imagenet_d_map: str | None) -> None:
    if variants and cfg.data.name != "imagenet":
        flag = "--imagenet-" + next(iter(variants)).replace("_", "-")
        raise ValueError(f"{flag}: ImageNet variants need an ImageNet-trained run (this one: {cfg.data.name})")
    for key, root in variants.items():
        flag = "--imagenet-" + key.replace("_", "-")
        if key == "c_bar":
            check_c_dir(root, IMAGENET_C_BAR, cfg.eval.severities, flag)
        elif not Path(root).is_dir():
            raise FileNotFoundError(f"{flag}: {root} is not a directory")
    if "d" in variants and imagenet_d_map is None:
        raise ValueError("--imagenet-d needs --imagenet-d-map (class -> ImageNet-1k ids json)")
    if "d" in variants and not Path(imagenet_d_map).is_file():
        raise FileNotFoundError(f"--imagenet-d-map: {imagenet_d_map} not found")


def check_evaluation_inputs(cfg, variants: dict[str, str] | None = None, imagenet_d_map: str | None = None) -> None:
    """Fail fast: raise a one-line ValueError / FileNotFoundError if anything the evaluation of ``cfg``
    (a RunConfig) will need is missing, before any training or evaluation.

    Checks, without reading images: the released files of ``eval.c_dir`` (every requested corruption
    and severity), or for on-the-fly corruptions an in-memory test set and the frost textures; and the
    ImageNet variant folders of ``damp evaluate`` (``variants`` as in :func:`evaluate_saved_run`).
    """
    from damp.config import resolve_corruptions

    names = resolve_corruptions(cfg.eval.corruptions)
    if names and cfg.eval.c_dir is not None:
        check_c_dir(cfg.eval.c_dir, names, cfg.eval.severities)
    elif names:
        _check_on_the_fly(cfg, names)
    _check_variants(cfg, variants or {}, imagenet_d_map)


def _saved_config(state: dict, *, corruptions, severities, c_dir, fgsm, seed, data_root, frost_dir):
    """The checkpoint's run config with `damp evaluate`'s overrides applied (None: keep the run's)."""
    from dataclasses import replace

    from damp.config import config_from_dict

    cfg = config_from_dict(state["config"])
    e, d = cfg.eval, cfg.data
    e = replace(e, corruptions=e.corruptions if corruptions is None else corruptions, seed=seed,
                severities=tuple(severities or e.severities), c_dir=e.c_dir if c_dir is None else c_dir,
                fgsm=e.fgsm if fgsm is None else tuple(fgsm))
    d = replace(d, root=d.root if data_root is None else data_root,
                frost_dir=d.frost_dir if frost_dir is None else frost_dir)
    return replace(cfg, eval=e, data=d)


def _load_model(cfg, state: dict, ckpt: Path, bundle, device: str) -> nn.Module:
    from damp.train import model_for

    model = model_for(cfg, bundle).to(device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"{ckpt}: weights do not fit the model of its config ({str(err).splitlines()[0]})") from None
    return model.eval()


def _variant_results(model: nn.Module, bundle, variants: dict[str, str], severities: Sequence[int],
                     imagenet_d_map: str | None) -> dict:
    """The ImageNet variants (paper Tables 1-3), each with the official code's preprocessing."""
    import json

    out: dict = {}
    for key, root in variants.items():
        if key == "c_bar":  # clean-eval crop, not native size (unlike ImageNet-C)
            c_bar = evaluate_c_dir(model, root, IMAGENET_C_BAR, severities, classes=bundle.classes,
                                   transform="center", size=bundle.image_size)
            out["imagenet_c_bar"] = {"corruptions": c_bar, **summarize(c_bar)}
            continue
        mapping = json.loads(Path(imagenet_d_map).read_text()) if key == "d" else None
        transform = "resize256" if key in ("a", "sketch", "d") else "center"
        out[f"imagenet_{key}"] = evaluate_variant(model, root, bundle.classes, transform=transform, mask=key == "a",
                                                  mapping=mapping, size=bundle.image_size)
    return out


def evaluate_saved_run(target: str, *, corruptions: str | None = None, severities: Sequence[int] | None = None,
                       c_dir: str | None = None, fgsm: Sequence[float] | None = None, seed: int = 0,
                       device: str = "cpu", data_root: str | None = None, frost_dir: str | None = None,
                       variants: dict[str, str] | None = None, imagenet_d_map: str | None = None,
                       mce_baseline: str = "hendrycks", progress=None) -> dict:
    """Evaluate a run directory or checkpoint file with its clean weights; returns the results dict.

    ``variants``: {"a" | "sketch" | "drawing" | "cartoon" | "d" | "c_bar": folder} for the ImageNet
    variants the paper reports. Every input is checked (:func:`check_evaluation_inputs`) before any
    image is read. ``mce_baseline``: a key of ``MCE_BASELINES`` for the ImageNet-C mCE.
    """
    from damp.checkpoint import find_checkpoint, load_checkpoint
    from damp.config import resolve_corruptions
    from damp.data.build import build_data

    path = Path(target)
    ckpt = find_checkpoint(path) if path.is_dir() else path
    if ckpt is None:
        raise FileNotFoundError(f"{path}: no checkpoint (last.pt) in this run directory")
    state = load_checkpoint(ckpt)
    cfg = _saved_config(state, corruptions=corruptions, severities=severities, c_dir=c_dir, fgsm=fgsm, seed=seed,
                        data_root=data_root, frost_dir=frost_dir)
    check_evaluation_inputs(cfg, variants, imagenet_d_map)
    aggregate({}, cfg.data.name, mce_baseline)  # rejects an unknown baseline now, not after the evaluation
    e = cfg.eval
    bundle = build_data(cfg, device=device, vit=cfg.model.name.startswith("vit"), need_train=False)
    model = _load_model(cfg, state, ckpt, bundle, device)
    results: dict = {"clean": classification_metrics(*predict(model, bundle.test)), "corruptions": {},
                     "summary": {}, "fgsm": [], "variants": {},
                     "meta": {"checkpoint": str(ckpt), "step": int(state["step"]), "dataset": cfg.data.name,
                              "model": cfg.model.name, "method": cfg.method.name,
                              "units": {"error": "%", "ece": "% (15 bins)", "nll": "nats"}}}
    names = resolve_corruptions(e.corruptions)
    if names:
        results["corruptions"], meta = corruption_results(model, bundle, cfg, names, e.severities, seed=e.seed,
                                                          c_dir=e.c_dir, progress=progress)
        results["meta"].update(meta)
    results["summary"] = aggregate(results["corruptions"], cfg.data.name, mce_baseline)
    if e.fgsm:
        results["fgsm"] = fgsm_error(model, bundle.test, list(e.fgsm))
    results["variants"] = _variant_results(model, bundle, variants or {}, e.severities, imagenet_d_map)
    return results
