"""ResNet18 (CIFAR stem), PreActResNet18 (TinyImageNet) and ResNet50 v1.5 (ImageNet), in plain torch.

Architectures and initialisation as in the official code (trungtrinh44/DAMP; models of paper App. F):

- no-bias convs, He-normal (fan_out, untruncated) init; BN eps 1e-5, momentum 0.1 (Flax's 0.9 is the
  decay of the other term), scale 1 and shift 0, except the zero-initialised last BN scale of every
  post-activation residual branch (BasicBlock, Bottleneck; not the pre-activation blocks);
- projection shortcuts (1x1 conv + BN; 1x1 conv only in PreActResNet) wherever the shape changes;
- global average pool and a linear head with U(-1, 1) / sqrt(num_classes) weights and zero bias;
- TF/Flax "SAME" padding: a strided k x k conv or pool gets ``max((ceil(n/s) - 1) * s + k - n, 0)``
  pixels of padding with the odd one at the bottom/right (``SamePad2d``); on even-sized inputs torch's
  symmetric ``padding=k//2`` would shift every strided window up-left by one pixel. Stride-1 convs and
  1x1 convs need no change.

Optional dropout before the head gives the Dropout baseline (the official ResNets have none, and the
paper does not say where it goes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from damp.models.small import PixelStandardize


class SamePad2d(nn.Module):
    """Pad (B, C, H, W) as Flax/TF ``padding="SAME"`` does for a ``kernel`` x ``kernel`` window at ``stride``.

    Total padding per side pair is ``max((ceil(n / stride) - 1) * stride + kernel - n, 0)``, split with
    the extra pixel after (bottom/right). ``value`` is -inf before a max-pool (Flax pads reduce_window
    with its -inf identity), 0 before a conv.
    """

    def __init__(self, kernel: int, stride: int, value: float = 0.0) -> None:
        super().__init__()
        self.kernel, self.stride, self.value = kernel, stride, value

    def _amount(self, n: int) -> tuple[int, int]:
        total = max((-(-n // self.stride) - 1) * self.stride + self.kernel - n, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = self._amount(x.shape[-2]), self._amount(x.shape[-1])
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom), value=self.value)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, value={self.value}"


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    """No-bias k x k conv; a strided one pads nothing itself and follows ``_pad(k, stride)``."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if stride == 1 else 0, bias=False)


def _pad(k: int, stride: int, value: float = 0.0) -> nn.Module:
    """The "SAME" padding before a strided k x k window (a 1x1 window never needs any)."""
    return SamePad2d(k, stride, value) if stride > 1 and k > 1 else nn.Identity()


class BasicBlock(nn.Module):
    """ResNet v1 basic block (the official ``ResNetBlockV1``): relu(bn(conv(relu(bn(conv x)))) + skip)."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.pad1 = _pad(3, stride)
        self.conv1, self.bn1 = _conv(cin, cout, 3, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv(cout, cout, 3), nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)  # zero-init the last BN scale of the branch (official code)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(self.pad1(x))))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3x3 conv; the last BN scale starts at zero."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = _conv(cin, width, 1), nn.BatchNorm2d(width)
        self.pad2 = _pad(3, stride)
        self.conv2, self.bn2 = _conv(width, width, 3, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = _conv(width, cout, 1), nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn3.weight)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(self.pad2(out))))
        return self.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block (the official code's ``ResNetBlockV2``).

    ``a = relu(bn1(x))`` is computed first and *both* paths start from it: the residual branch is
    ``conv2(relu(bn2(conv1(a))))`` and the shortcut is ``a`` itself (identity block) or a 1x1 conv of
    ``a`` (projection block, no BN). Nothing follows the addition. No BN scale is zero-initialised.
    """

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv(cin, cout, 3, stride)
        self.pad1 = _pad(3, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv(cout, cout, 3)
        self.shortcut = _conv(cin, cout, 1, stride) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU(inplace=False)  # ``a`` feeds both paths: never overwrite it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.bn1(x))
        skip = self.shortcut(a) if self.shortcut is not None else a
        out = self.conv2(self.relu(self.bn2(self.conv1(self.pad1(a)))))
        return out + skip


def _init(model: nn.Module, num_classes: int) -> None:
    """Convs He-normal (fan_out); the head U(-1, 1) / sqrt(num_classes) with zero bias (official code)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            bound = 1 / math.sqrt(num_classes)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


class ResNet(nn.Module):
    """ResNet with a CIFAR (3x3, stride 1, no max-pool) or ImageNet (7x7/2 + 3x3/2 max-pool) stem.

    PreActBlock models (the official ``resnet_v2``) have a stem of one conv (no BN/ReLU) and a final
    BN + ReLU before the pool.

    Args:
        block: BasicBlock, Bottleneck or PreActBlock.
        layers: blocks per stage.
        stem: "cifar" or "imagenet".
        mean, std: input normalisation inside the model (inputs are [0, 1] pixels).
        width: channels of the stem and the first stage (64 in the paper's ResNets).
    """

    def __init__(self, block: type[nn.Module], layers: list[int], num_classes: int, *, stem: str = "cifar",
                 in_channels: int = 3, dropout: float = 0.0, mean: tuple[float, ...] = (0.5,) * 3,
                 std: tuple[float, ...] = (0.5,) * 3, width: int = 64) -> None:
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"Unknown stem: {stem!r} (choose 'cifar' or 'imagenet')")
        self.normalize = PixelStandardize(mean, std)
        preact = block is PreActBlock
        stride = 1 if stem == "cifar" else 2
        # The stem's padding and max-pool sit outside ``self.stem`` so its parameter names stay stem.0/stem.1.
        self.stem_pad = _pad(7, 2) if stem == "imagenet" else nn.Identity()
        layers_stem: list[nn.Module] = [_conv(in_channels, width, 3 if stem == "cifar" else 7, stride)]
        if not preact:  # the official resnet_v2 stem is the conv alone
            layers_stem += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*layers_stem)
        self.maxpool = (nn.Sequential(_pad(3, 2, float("-inf")), nn.MaxPool2d(3, 2)) if stem == "imagenet"
                        else nn.Identity())
        stages, cin = [], width
        for i, n in enumerate(layers):
            stage_width = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, stage_width, 2 if (j == 0 and i > 0) else 1))
                cin = stage_width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.final = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True)) if preact else nn.Sequential()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes)
        _init(self, num_classes)  # convs and the head only: the blocks' zero-init BN scales stay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) pixels in [0, 1] -> (B, num_classes) logits."""
        x = self.maxpool(self.stem(self.stem_pad(self.normalize(x))))
        x = self.final(self.stages(x))
        return self.head(self.dropout(self.pool(x)))


def resnet18(num_classes: int, **kw) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, stem="cifar", **kw)


def preact_resnet18(num_classes: int, **kw) -> ResNet:
    return ResNet(PreActBlock, [2, 2, 2, 2], num_classes, stem="cifar", **kw)


def resnet8(num_classes: int, width: int = 16, **kw) -> ResNet:
    """Three stages of one BasicBlock (widths w, 2w, 4w): the CIFAR ResNet18 recipe at a size that
    trains to convergence on 2 CPU cores (the converged evidence suite, docs/evidence.md)."""
    return ResNet(BasicBlock, [1, 1, 1], num_classes, stem="cifar", width=width, **kw)


def resnet50(num_classes: int, **kw) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, stem="imagenet", **kw)
