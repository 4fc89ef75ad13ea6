"""ResNet18 (CIFAR stem), PreActResNet18 (TinyImageNet) and ResNet50 v1.5 (ImageNet), in plain torch.

Architectures as in the official DAMP code (paper.md §2 "Models"): no-bias convs with He-normal
(fan_out) init, BN eps 1e-5 and momentum 0.1 (Flax's 0.9 is the decay of the other term), zero-init
of the last BN scale in each residual branch, global average pool, linear head. Optional dropout
before the head gives the Dropout baseline (the paper does not say where dropout goes in ResNets).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from damp.models.small import Normalize


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, cout, 3, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv(cout, cout, 3), nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)  # zero-init the last BN scale of the branch
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3x3 conv."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = _conv(cin, width, 1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv(width, width, 3, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = _conv(width, cout, 1), nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn3.weight)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block; the projection shortcut is a 1x1 conv only."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv(cin, cout, 3, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv(cout, cout, 3)
        self.shortcut = _conv(cin, cout, 1, stride) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(self.relu(self.bn2(out))) + skip


def _init(model: nn.Module, num_classes: int) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):  # U(-1, 1) / sqrt(num_classes) (paper.md §2)
            bound = 1 / math.sqrt(num_classes)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


class ResNet(nn.Module):
    """ResNet with a CIFAR (3x3, stride 1, no max-pool) or ImageNet (7x7/2 + max-pool) stem.

    Args:
        block: BasicBlock, Bottleneck or PreActBlock.
        layers: blocks per stage.
        stem: "cifar" or "imagenet".
        mean, std: input normalisation inside the model (inputs are [0, 1] pixels).
    """

    def __init__(self, block: type[nn.Module], layers: list[int], num_classes: int, *, stem: str = "cifar",
                 in_channels: int = 3, dropout: float = 0.0, mean: tuple[float, ...] = (0.5,) * 3,
                 std: tuple[float, ...] = (0.5,) * 3) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        preact = block is PreActBlock
        if stem == "cifar":
            layers_stem: list[nn.Module] = [_conv(in_channels, 64, 3)]
            if not preact:  # PreActResNet18's stem has no BN (paper.md §2)
                layers_stem += [nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
        else:
            layers_stem = [_conv(in_channels, 64, 7, 2), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                           nn.MaxPool2d(3, 2, 1)]
        self.stem = nn.Sequential(*layers_stem)
        stages, cin = [], 64
        for i, n in enumerate(layers):
            width = 64 * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.final = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True)) if preact else nn.Sequential()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes)
        _init(self, num_classes)  # convs and the head only: the blocks' zero-init BN scales stay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) pixels in [0, 1] -> (B, num_classes) logits."""
        x = self.final(self.stages(self.stem(self.normalize(x))))
        return self.head(self.dropout(self.pool(x)))


def resnet18(num_classes: int, **kw) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, stem="cifar", **kw)


def preact_resnet18(num_classes: int, **kw) -> ResNet:
    return ResNet(PreActBlock, [2, 2, 2, 2], num_classes, stem="cifar", **kw)


def resnet50(num_classes: int, **kw) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, stem="imagenet", **kw)
