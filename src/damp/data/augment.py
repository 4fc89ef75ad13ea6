"""Batched, on-device augmentations: pure functions over (B, C, H, W) batches with an explicit generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, uniforms: torch.Tensor) -> torch.Tensor:
    """Zero-pad by ``padding`` and take an H x W crop per image (one gather, no Python loop).

    Args:
        x: (B, C, H, W) batch.
        padding: pixels of zero padding on each side (the paper's CIFAR/Tiny recipe uses 4).
        uniforms: (B, 2) numbers in [0, 1) choosing each image's row and column offset.

    Returns:
        (B, C, H, W) crops.
    """
    if padding == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    offsets = (uniforms[:, :2].T * (2 * padding + 1)).long().clamp_max(2 * padding)  # (2, B) in [0, 2p]
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Flip image i horizontally when ``uniforms[i] < 1/2``. x: (B, C, H, W), uniforms: (B,)."""
    return torch.where((uniforms < 0.5)[:, None, None, None], x.flip(-1), x)


def crop_flip(x: torch.Tensor, uniforms: torch.Tensor, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """The paper's CIFAR/TinyImageNet recipe: random crop with padding, then horizontal flip.

    ``uniforms`` (B, >= 3) are the images' own draws (the loader keys them by dataset index), so an
    image is augmented the same way whatever batch or process it lands in.
    """
    x = random_crop(x, padding, uniforms[:, :2])
    return random_flip(x, uniforms[:, 2]) if flip else x


def mixup_fixed(x: torch.Tensor, targets: torch.Tensor, num_classes: int, coefficient: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp as the official ViT code does it: each batch with its reverse at a fixed coefficient.

    ``x' = c x + (1 - c) flip_batch(x)`` and the same mix of the one-hot labels (no Beta draw;
    paper §4, official ViT code). Returns (mixed images, soft targets (B, K)).
    """
    one_hot = torch.nn.functional.one_hot(targets, num_classes).to(x.dtype)
    return coefficient * x + (1 - coefficient) * x.flip(0), coefficient * one_hot + (1 - coefficient) * one_hot.flip(0)
