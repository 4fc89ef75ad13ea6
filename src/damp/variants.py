"""The ImageNet variants the paper reports (Tables 1-3), as a registry, with their preprocessing.

Each variant names its folder layout and the preprocessing of the official code: ImageNet-C-bar
goes through the clean-evaluation centre crop; ImageNet-A, -Sketch and -D through a 256x256 resize
and a 224 centre crop; ImageNet-A restricts the logits to its 200 classes; ImageNet-D maps folder
classes to ImageNet-1k ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from damp.data.folders import scan_class_folders
from damp.metrics import summarize
from damp.streaming import check_c_dir, evaluate_c_dir, folder_batches


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
    penalty = None  # ImageNet-A: -inf on the logits of the classes absent from the folder
    if mask:
        penalty = torch.full((len(classes),), float("-inf"), device=device)
        penalty[[classes.index(c) for c in present]] = 0
    table = None  # ImageNet-D: folder class -> up to 3 ImageNet-1k ids (-1 pads)
    if mapping is not None:
        table = torch.full((len(present), 3), -1, dtype=torch.long, device=device)
        for i, c in enumerate(present):
            ids = [int(v) for v in mapping[c] if int(v) >= 0][:3]
            table[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    correct, images = torch.zeros((), device=device), 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, labels in folder_batches(samples, batch_size, device, size, transform):
                logits = model(x).float()
                prediction = (logits if penalty is None else logits + penalty).argmax(-1)
                hits = (table[labels] == prediction[:, None]).any(1) if table is not None else prediction == labels
                correct += hits.sum()
                images += len(labels)
    finally:
        model.train(was_training)
    return {"error": 100.0 * (1 - float(correct) / max(images, 1)), "images": images}


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
