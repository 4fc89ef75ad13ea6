"""Hendrycks-Dietterich corruptions as pure, batched torch functions.

``corrupt(x, name, severity, preset=None, generator=None)`` takes a (B, C, H, W) batch (C in {1, 3},
uint8 or float in [0, 1]) and returns the corrupted batch with the same shape, dtype and device.

Grayscale (C = 1): per-element and spatial corruptions act on the single channel. The colour
operations (brightness, saturate, snow, frost, spatter) see the grey image as RGB with three equal
channels and return the ITU-R 601 luma of their RGB result. So brightness on grey is clip(x + c), and
saturate changes grey images only where the reference adds a constant to S (severities 4-5).

>>> x = torch.rand(2, 3, 32, 32)
>>> y = corrupt(x, "gaussian_noise", 3, generator=torch.Generator().manual_seed(0))
>>> y.shape, y.dtype
(torch.Size([2, 3, 32, 32]), torch.float32)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from damp.corruptions import blur, digital, noise, weather
from damp.corruptions._common import (PRESETS, SEVERITIES, check_bchw, check_severity, default_preset, from_unit_float,
                                      luma, make_generator, to_unit_float)

# The canonical order of hendrycks/robustness (`imagenet_c.corruption_tuple`): 15 benchmark
# corruptions, then the 4 extra ("validation") ones.
CANONICAL_NAMES = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate",
)
GROUPS = {"noise": CANONICAL_NAMES[0:3], "blur": CANONICAL_NAMES[3:7], "weather": CANONICAL_NAMES[7:11],
          "digital": CANONICAL_NAMES[11:15], "extra": CANONICAL_NAMES[15:19]}


@dataclass(frozen=True)
class Corruption:
    """One registered corruption: ``fn(x_float01, params_for_severity, generator, **options) -> float01``.

    ``color``: needs RGB (grey input is expanded and the result converted back to luma).
    ``options``: extra keywords ``fn`` takes ("preset", "frost_dir").
    """

    name: str
    fn: Callable[..., torch.Tensor]
    params: dict[str, tuple]  # preset -> the 5 per-severity constants
    color: bool = False
    options: tuple[str, ...] = ()


def _register(*entries: Corruption) -> dict[str, Corruption]:
    table = {c.name: c for c in entries}
    missing = set(CANONICAL_NAMES) - set(table)
    if missing:
        raise RuntimeError(f"corruptions not registered: {sorted(missing)}")
    return {name: table[name] for name in CANONICAL_NAMES}


# One table, canonical order (`imagenet_c.corruption_tuple`).
CORRUPTIONS: dict[str, Corruption] = _register(
    Corruption("gaussian_noise", noise.gaussian_noise, noise.GAUSSIAN_NOISE),
    Corruption("shot_noise", noise.shot_noise, noise.SHOT_NOISE),
    Corruption("impulse_noise", noise.impulse_noise, noise.IMPULSE_NOISE),
    Corruption("defocus_blur", blur.defocus_blur, blur.DEFOCUS_BLUR),
    Corruption("glass_blur", blur.glass_blur, blur.GLASS_BLUR),
    Corruption("motion_blur", blur.motion_blur, blur.MOTION_BLUR),
    Corruption("zoom_blur", blur.zoom_blur, blur.ZOOM_BLUR),
    Corruption("snow", weather.snow, weather.SNOW, color=True),
    Corruption("frost", weather.frost_with, weather.FROST, color=True, options=("preset", "frost_dir")),
    Corruption("fog", weather.fog_with, weather.FOG, options=("preset",)),
    Corruption("brightness", digital.brightness, digital.BRIGHTNESS, color=True),
    Corruption("contrast", digital.contrast, digital.CONTRAST),
    Corruption("elastic_transform", digital.elastic_transform, digital.ELASTIC_TRANSFORM),
    Corruption("pixelate", digital.pixelate, digital.PIXELATE),
    Corruption("jpeg_compression", digital.jpeg_compression, digital.JPEG_COMPRESSION),  # Pillow, on the CPU
    Corruption("speckle_noise", noise.speckle_noise, noise.SPECKLE_NOISE),
    Corruption("gaussian_blur", blur.gaussian_blur, blur.GAUSSIAN_BLUR),
    Corruption("spatter", weather.spatter, weather.SPATTER, color=True),
    Corruption("saturate", digital.saturate, digital.SATURATE, color=True),
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
    return list(wanted)


def get(name: str) -> Corruption:
    """The registry entry for ``name``, or a ``ValueError`` listing the known names."""
    if name not in CORRUPTIONS:
        raise ValueError(f"Unknown corruption: {name!r} (known: {', '.join(CORRUPTIONS)})")
    return CORRUPTIONS[name]


def corrupt(x: torch.Tensor, name: str, severity: int, *, preset: str | None = None,
            generator: torch.Generator | None = None, frost_dir: str | None = None) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1-5) to a batch.

    Args:
        x: (B, C, H, W) images, C in {1, 3}, uint8 or float in [0, 1], on any device.
        name: a name from :func:`names`.
        severity: 1-5.
        preset: constant table, "cifar" (32 px), "tiny" (64 px) or "imagenet" (224 px); by default
            chosen from the image size (<= 32 px cifar, <= 64 px tiny, else imagenet).
        generator: a ``torch.Generator`` on ``x.device``; the output is a deterministic function of
            its state. Without one, fresh OS entropy is used (never the global RNG).
        frost_dir: folder with the frost textures (else ``$DAMP_FROST_DIR`` or the installed
            ``imagecorruptions`` package data; see :mod:`damp.corruptions.assets`).

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
    options = {"preset": preset, "frost_dir": frost_dir}
    x01 = to_unit_float(x)
    grey = entry.color and x01.shape[1] == 1
    if grey:
        x01 = x01.expand(-1, 3, -1, -1)
    out = entry.fn(x01, entry.params[preset][severity - 1], gen, **{k: options[k] for k in entry.options})
    return from_unit_float(luma(out) if grey else out, x)




def corrupt_half(x: torch.Tensor, name: str, severity: int, generator: torch.Generator,
                 frost_dir: str | None = None) -> torch.Tensor:
    """Paper Algorithm 2: corrupt the first half of the batch with one corruption (severity 1-5) and
    keep the rest clean. x: (B, C, H, W) float in [0, 1]."""
    half = x.shape[0] // 2
    out = x.clone()
    out[:half] = corrupt(x[:half], name, severity, generator=generator, frost_dir=frost_dir)
    return out


__all__ = ["CANONICAL_NAMES", "CORRUPTIONS", "Corruption", "GROUPS", "PRESETS", "SEVERITIES", "corrupt", "corrupt_half",
           "get", "names"]
