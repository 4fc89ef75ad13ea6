"""Hendrycks-Dietterich corruptions as pure, batched torch functions.

``corrupt(x, name, severity, preset=None, generator=None)`` takes a (B, C, H, W) batch (C in {1, 3},
uint8 or float in [0, 1]) and returns the corrupted batch with the same shape, dtype and device.

>>> x = torch.rand(2, 3, 32, 32)
>>> y = corrupt(x, "gaussian_noise", 3, generator=torch.Generator().manual_seed(0))
>>> y.shape, y.dtype
(torch.Size([2, 3, 32, 32]), torch.float32)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from damp.corruptions import noise
from damp.corruptions._common import (PRESETS, check_bchw, check_severity, default_preset, from_unit_float,
                                      make_generator, to_unit_float)

# The canonical order of hendrycks/robustness (anchors.md A.1): 15 benchmark corruptions, then the 4
# extra ("validation") ones.
CANONICAL_NAMES = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate",
)
GROUPS = {"noise": CANONICAL_NAMES[0:3], "blur": CANONICAL_NAMES[3:7], "weather": CANONICAL_NAMES[7:11],
          "digital": CANONICAL_NAMES[11:15], "extra": CANONICAL_NAMES[15:19]}


@dataclass(frozen=True)
class Corruption:
    """One registered corruption: ``fn(x_float01, params_for_severity, generator) -> float01``."""

    name: str
    fn: Callable[..., torch.Tensor]
    params: dict[str, tuple]  # preset -> the 5 per-severity constants
    extra: bool


def _register(*entries: tuple[str, Callable, dict]) -> dict[str, Corruption]:
    table = {name: Corruption(name, fn, params, name in GROUPS["extra"]) for name, fn, params in entries}
    return {name: table[name] for name in CANONICAL_NAMES if name in table}


CORRUPTIONS: dict[str, Corruption] = _register(
    ("gaussian_noise", noise.gaussian_noise, noise.GAUSSIAN_NOISE),
    ("shot_noise", noise.shot_noise, noise.SHOT_NOISE),
    ("impulse_noise", noise.impulse_noise, noise.IMPULSE_NOISE),
    ("speckle_noise", noise.speckle_noise, noise.SPECKLE_NOISE),
)


def names(subset: str = "all") -> list[str]:
    """Registered corruption names in canonical order; ``subset`` is "all", "common" (the 15
    benchmark corruptions), "extra" (the last 4) or a group: "noise", "blur", "weather", "digital"."""
    if subset == "all":
        wanted = CANONICAL_NAMES
    elif subset == "common":
        wanted = CANONICAL_NAMES[:15]
    elif subset in GROUPS:
        wanted = GROUPS[subset]
    else:
        raise ValueError(f"Unknown corruption subset: {subset!r} (all, common, extra, noise, blur, weather, "
                         "digital)")
    return [n for n in wanted if n in CORRUPTIONS]


def get(name: str) -> Corruption:
    """The registry entry for ``name``, or a ``ValueError`` listing the known names."""
    if name not in CORRUPTIONS:
        raise ValueError(f"Unknown corruption: {name!r} (known: {', '.join(CORRUPTIONS)})")
    return CORRUPTIONS[name]


def corrupt(x: torch.Tensor, name: str, severity: int, *, preset: str | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1-5) to a batch.

    Args:
        x: (B, C, H, W) images, C in {1, 3}, uint8 or float in [0, 1], on any device.
        name: a name from :func:`names`.
        severity: 1-5.
        preset: constant table, "cifar" (32 px), "tiny" (64 px) or "imagenet" (224 px); by default
            chosen from the image size (<= 32 px cifar, <= 64 px tiny, else imagenet).
        generator: a ``torch.Generator`` on ``x.device``; the output is a deterministic function of
            its state. Without one, fresh OS entropy is used (never the global RNG).

    Returns:
        (B, C, H, W) tensor of the input's dtype and device. uint8 output is truncated like the
        reference's ``np.uint8``.
    """
    check_bchw(x)
    entry = get(name)
    check_severity(severity)
    preset = preset or default_preset(x.shape[-2], x.shape[-1])
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset: {preset!r} (choose from {', '.join(PRESETS)})")
    gen = make_generator(x.device, generator)
    if x.shape[0] == 0:
        return x.clone()
    out = entry.fn(to_unit_float(x), entry.params[preset][severity - 1], gen)
    return from_unit_float(out, x)


__all__ = ["CANONICAL_NAMES", "CORRUPTIONS", "Corruption", "GROUPS", "PRESETS", "corrupt", "get", "names"]
