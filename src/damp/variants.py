"""The ImageNet variants the paper reports (Tables 1-3), as a registry, with their preprocessing.

Each variant names its folder layout and the preprocessing of the official code: ImageNet-C-bar
goes through the clean-evaluation centre crop; ImageNet-A, -Sketch and -D through a 256x256 resize
and a 224 centre crop; ImageNet-A restricts the logits to its 200 classes; ImageNet-D maps folder
classes to ImageNet-1k ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from damp.corruptions import SEVERITIES
from damp.corruptions.dataset import read_array_c, read_folder_c
from damp.data.folders import load_rgb, scan_class_folders, to_tensor_u8
from damp.data.pil_augment import center_crop_eval
from damp.metrics import classification_metrics, summarize
from damp.pixels import to_unit_float


@dataclass(frozen=True)
class Variant:
    """One ImageNet variant: its results key, its preprocessing and its scoring rule."""

    key: str  # results["variants"] key
    transform: str  # folder_batches transform: "center" or "resize256"
    mask: bool = False  # restrict logits to the classes present (ImageNet-A)
    needs_map: bool = False  # folder class -> ImageNet-1k ids json (ImageNet-D)
    corrupted: bool = False  # a -C style folder of corruptions x severities (ImageNet-C-bar)


# --imagenet-<name> flag -> variant.
VARIANTS = {"a": Variant("imagenet_a", "resize256", mask=True), "sketch": Variant("imagenet_sketch", "resize256"),
            "drawing": Variant("imagenet_drawing", "center"), "cartoon": Variant("imagenet_cartoon", "center"),
            "d": Variant("imagenet_d", "resize256", needs_map=True),
            "c_bar": Variant("imagenet_c_bar", "center", corrupted=True)}
IMAGENET_C_BAR = ("blue_noise_sample", "brownish_noise", "caustic_refraction", "checkerboard_cutout",
                  "cocentric_sine_waves", "inverse_sparkles", "perlin_noise", "plasma_noise",
                  "single_frequency_greyscale", "sparkles")


def folder_batches(samples, batch_size: int, device: torch.device, size: int | None = None,
                   transform: str = "native"):
    """Batches of decoded folder images: "native" (as stored, resized only if sizes differ from
    ``size``), "center" (clean-eval 224/256 centre crop) or "resize256" (256x256 then centre 224)."""

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
        x = to_unit_float(torch.stack(images).to(device))
        yield x, torch.tensor([label for _, label in chunk], device=device)


def evaluate_c_dir(model: nn.Module, c_dir: str, names: Sequence[str], severities: Sequence[int], *,
                   batch_size: int = 250, classes: list[str] | None = None, progress=None,
                   transform: str = "native", size: int | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate on released -C files: CIFAR-10/100-C `.npy` or -C folders.

    Folder images go through :func:`folder_batches` with ``transform``: "native" for Tiny-ImageNet-C /
    ImageNet-C (as stored, no crop, as the official DAMP code; resized only if not ``size``), "center"
    (the clean-eval crop, as the official code decodes it) for ImageNet-C-bar (paper Table 1, IN-C-bar).
    """

    device = next(model.parameters()).device
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        results[name] = {}
        for severity in severities:
            if (Path(c_dir) / f"{name}.npy").is_file():
                images, labels = read_array_c(c_dir, name, severity)
                batches = tensor_batches(images, labels, batch_size, device)
            else:
                samples, _ = read_folder_c(c_dir, name, severity, classes)
                batches = folder_batches(samples, batch_size, device, size, transform)
            results[name][str(severity)] = classification_metrics(*predict(model, batches))
            if progress is not None:
                progress(name, severity)
    return results


def tensor_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device):
    for i in range(0, len(labels), batch_size):
        x = images[i:i + batch_size].to(device)
        yield to_unit_float(x), labels[i:i + batch_size].to(device)


def evaluate_variant(model: nn.Module, root: str, classes: list[str], *, transform: str, mask: bool = False,
                     mapping: dict[str, list[int]] | None = None, batch_size: int = 100, size: int = 224
                     ) -> dict[str, float]:
    """Error (%) on an ImageNet variant folder ``root/<wnid or class>/<file>``.

    ``mask``: restrict the logits to the classes present (ImageNet-A's 200-class protocol, applied to
    every model family as the paper's numbers imply). ``mapping``: a folder class -> list of
    ImageNet-1k indices (ImageNet-D); a prediction is correct if it is any of them.
    """

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


def variant_results(model: nn.Module, classes: list[str], image_size: int, variants: dict[str, str],
                    severities: Sequence[int], imagenet_d_map: str | None) -> dict:
    """Every requested variant ({flag name: folder}), each with the official code's preprocessing."""
    out: dict = {}
    for name, root in variants.items():
        variant = VARIANTS[name]
        if variant.corrupted:
            c_bar = evaluate_c_dir(model, root, IMAGENET_C_BAR, severities, classes=classes,
                                   transform=variant.transform, size=image_size)
            out[variant.key] = {"corruptions": c_bar, **summarize(c_bar)}
            continue
        mapping = json.loads(Path(imagenet_d_map).read_text()) if variant.needs_map else None
        out[variant.key] = evaluate_variant(model, root, classes, transform=variant.transform, mask=variant.mask,
                                            mapping=mapping, size=image_size)
    return out


def _c_dir_severities(root: Path, name: str) -> list[int]:
    """Severities stored for ``name`` in a -C directory (either layout); [] if it is absent."""
    if (root / f"{name}.npy").is_file():
        if not (root / "labels.npy").is_file():
            return []
        meta = root / "meta.json"
        try:
            return list(json.loads(meta.read_text())["severities"]) if meta.is_file() else list(SEVERITIES)
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{meta}: not a damp meta.json (no severities list)") from None
    folder = root / name
    return [s for s in SEVERITIES if (folder / str(s)).is_dir()] if folder.is_dir() else []


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


def check_variants(dataset: str, severities: Sequence[int], variants: dict[str, str],
                   imagenet_d_map: str | None) -> None:
    """Raise a one-line error unless every requested variant folder (and the IN-D map) exists."""
    for name, root in variants.items():
        flag = "--imagenet-" + name.replace("_", "-")
        if dataset != "imagenet":
            raise ValueError(f"{flag}: ImageNet variants need an ImageNet-trained run (this one: {dataset})")
        if VARIANTS[name].corrupted:
            check_c_dir(root, IMAGENET_C_BAR, severities, flag)
        elif not Path(root).is_dir():
            raise FileNotFoundError(f"{flag}: {root} is not a directory")
        if VARIANTS[name].needs_map and imagenet_d_map is None:
            raise ValueError(f"{flag} needs --imagenet-d-map (class -> ImageNet-1k ids json)")
        if VARIANTS[name].needs_map and not Path(imagenet_d_map).is_file():
            raise FileNotFoundError(f"--imagenet-d-map: {imagenet_d_map} not found")
