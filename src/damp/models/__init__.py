"""Model zoo in plain torch (no torchvision/timm). Every model takes [0, 1] pixels and normalises inside.

>>> build_model("small_cnn", num_classes=10, in_channels=1)(torch.rand(2, 1, 32, 32)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from damp.models.small import MLP, Normalize, SmallCNN

MODELS = ("small_cnn", "mlp")


def build_model(name: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32,
                dropout: float = 0.0, **kwargs: Any) -> nn.Module:
    """Build a model by name; ``dropout`` > 0 gives the Dropout baseline's architecture."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"Invalid dropout: {dropout!r} (must be in [0, 1))")
    if name == "small_cnn":
        return SmallCNN(in_channels, num_classes, dropout=dropout, **kwargs)
    if name == "mlp":
        return MLP(in_channels * image_size * image_size, num_classes, dropout=dropout, **kwargs)
    raise ValueError(f"Unknown model: {name!r} (choose from {', '.join(MODELS)})")


__all__ = ["MLP", "MODELS", "Normalize", "SmallCNN", "build_model"]
