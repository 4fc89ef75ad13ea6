"""Models damp does not ship, written the way users write them, for the bring-your-own-model tests.

Every factory has the signature damp calls: ``factory(num_classes=..., in_channels=..., **kwargs)``.
"""

from __future__ import annotations

import torch
from torch import nn


def depthwise_separable(num_classes: int, in_channels: int, width: int = 8) -> nn.Module:
    """MobileNet-style blocks: depthwise 3x3 (groups = channels) then pointwise 1x1, with BatchNorm."""
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         *block(width, 2 * width, 2), *block(2 * width, 2 * width, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


class GroupLayerNorm(nn.Module):
    """Convs with GroupNorm, then LayerNorm over the pooled features (no BatchNorm anywhere)."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.gn1 = nn.GroupNorm(2, width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.gn2 = nn.GroupNorm(4, 2 * width)
        self.ln = nn.LayerNorm(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.gn2(self.conv2(torch.relu(self.gn1(self.conv1(x))))))
        return self.fc(self.ln(h.mean((2, 3))))


def group_layer_norm(num_classes: int, in_channels: int, width: int = 8) -> nn.Module:
    return GroupLayerNorm(num_classes, in_channels, width)


class PatchAttention(nn.Module):
    """A one-block vision transformer: patch embedding, pre-norm multi-head attention and MLP, class token."""

    def __init__(self, num_classes: int, in_channels: int, dim: int = 16, patch: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm1, self.norm2, self.norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
        h = self.norm1(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return self.head(self.norm(t[:, 0]))


def patch_attention(num_classes: int, in_channels: int, dim: int = 16) -> nn.Module:
    return PatchAttention(num_classes, in_channels, dim)


def biased(num_classes: int, in_channels: int, width: int = 8) -> nn.Module:
    """Biases everywhere: conv biases in front of BatchNorm, affine BatchNorm, linear biases, and a
    BatchNorm1d between the linear layers."""
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=True), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, stride=2, padding=1, bias=True), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, 16, bias=True),
                         nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, num_classes, bias=True))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock layout: conv1/bn1/conv2/bn2 and a ``downsample`` Sequential."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class TorchvisionStyleResNet(nn.Module):
    """torchvision.models.ResNet's structure and names (conv1, bn1, maxpool, layer1.., avgpool, fc),
    small: the state dict keys are those torchvision checkpoints use."""

    def __init__(self, num_classes: int, in_channels: int, layers: tuple[int, ...] = (1, 1), width: int = 8) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, blocks in enumerate(layers):
            setattr(self, f"layer{i + 1}", self._make_layer(width * 2 ** i, blocks, stride=1 if i == 0 else 2))
        self.num_layers = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def torchvision_resnet(num_classes: int, in_channels: int, layers: tuple[int, ...] = (1, 1)) -> nn.Module:
    return TorchvisionStyleResNet(num_classes, in_channels, tuple(layers))


FACTORIES = ("depthwise_separable", "group_layer_norm", "patch_attention", "biased", "torchvision_resnet")
