"""Batched, on-device augmentations: pure functions over (B, C, H, W) batches with an explicit generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and take a random H x W crop per image (one gather, no Python loop).

    Args:
        x: (B, C, H, W) batch.
        padding: pixels of zero padding on each side (the paper's CIFAR/Tiny recipe uses 4).
        generator: on ``x.device``.

    Returns:
        (B, C, H, W) crops.
    """
    if padding == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2. x: (B, C, H, W)."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """The paper's CIFAR/TinyImageNet recipe: random crop with padding, then horizontal flip."""
    x = random_crop(x, padding, generator)
    return random_flip(x, generator) if flip else x


def mixup_fixed(x: torch.Tensor, targets: torch.Tensor, num_classes: int, coefficient: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp as the official ViT code does it: each batch with its reverse at a fixed coefficient.

    ``x' = c x + (1 - c) flip_batch(x)`` and the same mix of the one-hot labels (no Beta draw;
    paper.md §2). Returns (mixed images, soft targets (B, K)).
    """
    one_hot = torch.nn.functional.one_hot(targets, num_classes).to(x.dtype)
    return coefficient * x + (1 - coefficient) * x.flip(0), coefficient * one_hot + (1 - coefficient) * one_hot.flip(0)


def corrupt_half(x: torch.Tensor, name: str, severity: int, generator: torch.Generator,
                 frost_dir: str | None = None) -> torch.Tensor:
    """Paper Algorithm 2: corrupt the first half of the batch with one corruption (severity 1-5),
    keep the rest clean."""
    from damp.corruptions import corrupt

    half = x.shape[0] // 2
    out = x.clone()
    out[:half] = corrupt(x[:half], name, severity, generator=generator, frost_dir=frost_dir)
    return out
