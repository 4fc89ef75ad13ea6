"""ViT-S/16 and ViT-B/16 as in Beyer et al. 2022 ("Better plain ViT baselines"), used by the paper.

Fixed 2-D sin-cos position embedding, no [cls] token, global average pooling, zero-initialised
head (paper.md §2). Pre-norm blocks with nn.MultiheadAttention (its q/k/v kernels are perturbed by
DAMP, as the official code perturbs every dense kernel). ``dropout`` > 0 adds dropout after the
attention and MLP outputs (the Dropout baseline; the paper does not give its placement).
"""

from __future__ import annotations

import torch
from torch import nn

from damp.models.small import Normalize


def sincos_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(h * w, dim) fixed position embedding: sin/cos of y and x over dim / 4 frequencies each."""
    if dim % 4:
        raise ValueError(f"width {dim} must be divisible by 4 for the 2-D sin-cos embedding")
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4 - 1))
    y, x = y.flatten()[:, None] * omega[None], x.flatten()[:, None] * omega[None]
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], 1)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """Plain ViT: patchify conv -> + sincos2d -> blocks -> LayerNorm -> mean pool -> zero-init head."""

    def __init__(self, num_classes: int, *, width: int, depth: int, heads: int, mlp_dim: int, patch: int = 16,
                 image_size: int = 224, in_channels: int = 3, dropout: float = 0.0,
                 mean: tuple[float, ...] = (0.5,) * 3, std: tuple[float, ...] = (0.5,) * 3) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.patchify = nn.Conv2d(in_channels, width, patch, stride=patch)
        grid = image_size // patch
        self.register_buffer("pos", sincos_2d(grid, grid, width)[None], persistent=False)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_dim, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) pixels in [0, 1] -> (B, num_classes) logits."""
        x = self.patchify(self.normalize(x)).flatten(2).transpose(1, 2)  # (B, N, width)
        x = self.blocks(x + self.pos.to(x.dtype))
        return self.head(self.norm(x).mean(1))


def vit_s16(num_classes: int, **kw) -> ViT:
    return ViT(num_classes, width=384, depth=12, heads=6, mlp_dim=1536, **kw)


def vit_b16(num_classes: int, **kw) -> ViT:
    return ViT(num_classes, width=768, depth=12, heads=12, mlp_dim=3072, **kw)
