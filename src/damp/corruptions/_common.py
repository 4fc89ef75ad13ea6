"""Shared corruption helpers: input checks, dtype round trips, presets and generators."""

from __future__ import annotations

import os

import torch

PRESETS = ("cifar", "tiny", "imagenet")


def check_bchw(x: torch.Tensor) -> None:
    """Raise a readable ``ValueError`` unless ``x`` is a (B, C, H, W) uint8/float batch with C in {1, 3}."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"expected C = 1 or 3 channels in (B, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
        raise ValueError(f"expected uint8 or floating-point images, got {x.dtype}")


def check_severity(severity: int) -> int:
    """Severity must be an integer 1..5."""
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ValueError(f"Invalid severity: {severity!r} (must be an integer 1-5)")
    return severity


def default_preset(height: int, width: int) -> str:
    """The constant table for an image size: <= 32 px cifar, <= 64 px tiny, else imagenet."""
    side = max(height, width)
    return "cifar" if side <= 32 else "tiny" if side <= 64 else "imagenet"


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1] (float64 input stays float64)."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x if x.dtype == torch.float64 else x.float()


def from_unit_float(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Back to the input dtype. uint8 output is *truncated*, like the reference's ``np.uint8(x * 255)``."""
    y = y.clamp(0.0, 1.0)
    if like.dtype == torch.uint8:
        return (y * 255.0).floor_().to(torch.uint8)
    return y.to(like.dtype)


def make_generator(device: torch.device, generator: torch.Generator | None) -> torch.Generator:
    """The caller's generator (checked to live on ``device``), or a fresh one seeded from OS entropy.

    Never the global RNG: corruptions are reproducible exactly when the caller passes a generator.
    """
    if generator is None:
        gen = torch.Generator(device=device)
        gen.manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
        return gen
    if generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the images are on {device}")
    return generator
