"""Pixel conversion, in one place: uint8 images and float images in [0, 1]."""

from __future__ import annotations

import torch


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float [0, 1] -> float32 (float64 stays float64, not rescaled).

    >>> to_unit_float(torch.tensor([0, 255], dtype=torch.uint8))
    tensor([0., 1.])
    """
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x if x.dtype == torch.float64 else x.float()
