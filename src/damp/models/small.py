"""Small models for digits and Fashion-MNIST: a CNN and an MLP. Both take [0, 1] pixels."""

from __future__ import annotations

import torch
from torch import nn


class PixelStandardize(nn.Module):
    """The layer ``(x - mean) / std`` per channel, inside the model, so attacks and corruptions act on [0, 1]
    pixels. ``damp.models.Normalized`` is the wrapper that puts one in front of a user's model."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (widths w, 2w, 4w) with max-pooling, global average pool, linear head.

    Args:
        in_channels: 1 (grayscale) or 3.
        num_classes: output logits.
        width: channels of the first stage.
        dropout: dropout rate before the head (the Dropout baseline), 0 for none.
        mean, std: input normalisation applied inside the model.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, dropout: float = 0.0,
                 mean: tuple[float, ...] = (0.5,), std: tuple[float, ...] = (0.5,)) -> None:
        super().__init__()
        self.normalize = PixelStandardize(mean * (in_channels // len(mean)), std * (in_channels // len(std)))
        self.features = nn.Sequential(
            *_conv_bn(in_channels, width), nn.MaxPool2d(2),
            *_conv_bn(width, 2 * width), nn.MaxPool2d(2),
            *_conv_bn(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) pixels in [0, 1] -> (B, num_classes) logits."""
        return self.head(self.dropout(self.features(self.normalize(x))))


class MLP(nn.Module):
    """Flatten -> [Linear-ReLU-Dropout] x depth -> Linear, on [0, 1] pixels of a fixed size."""

    def __init__(self, in_features: int, num_classes: int = 10, hidden: int = 256, depth: int = 2,
                 dropout: float = 0.0, mean: float = 0.5, std: float = 0.5) -> None:
        super().__init__()
        self.mean, self.std = mean, std
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) pixels in [0, 1] -> (B, num_classes) logits."""
        return self.net((x - self.mean) / self.std)
