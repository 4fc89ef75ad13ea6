"""ViT-S/16 and ViT-B/16 as in Beyer et al. 2022 ("Better plain ViT baselines"), used by the paper (App. F).

Architecture and initialisation follow the official code (trungtrinh44/DAMP, its ``ViT_S1k16`` and
``ViT_B1k16``), which agree with big_vision's plain ViT:

- patch embedding: a 16x16/16 conv with bias; kernel lecun-normal (truncated normal, std 1/sqrt(fan_in)
  after truncation at two standard deviations), bias zero;
- fixed 2-D sin-cos position embedding added to the patch tokens, no [cls] token, no learned embedding;
- pre-norm blocks, LayerNorm eps 1e-6 (scale 1, shift 0); multi-head attention whose q, k, v and output
  maps are each a D x D xavier-uniform kernel with zero bias; MLP D -> 4D -> D with tanh-approximate
  GELU (Flax's ``nn.gelu`` default), xavier-uniform kernels and N(0, 1e-6^2) biases;
- final LayerNorm, global average pool over tokens, no pre-logits layer, zero-initialised head.

``dropout`` > 0 adds dropout where the official module puts its ``dropout_rate``: after the attention
output, after the MLP's GELU and after the MLP output (the Dropout baseline; attention-weight dropout
is 0 there too). The q/k/v kernels live in nn.MultiheadAttention's stacked ``in_proj_weight``; DAMP
perturbs them as the official code perturbs every dense kernel.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from damp.models.small import PixelStandardize

# JAX's truncated_normal draws from N(0, 1) cut at +-2; dividing the target std by this constant (the
# std of that cut normal) gives the right std after truncation (Flax's lecun_normal).
_TRUNC_STD = 0.87962566103423978
MLP_BIAS_STD = 1e-6


def sincos_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(h * w, dim) fixed position embedding: sin/cos of y and x over dim / 4 frequencies each."""
    if dim % 4:
        raise ValueError(f"width {dim} must be divisible by 4 for the 2-D sin-cos embedding")
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4 - 1))
    y, x = y.flatten()[:, None] * omega[None], x.flatten()[:, None] * omega[None]
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], 1)


def lecun_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Flax's default kernel init: truncated normal (+-2 std) with std 1/sqrt(fan_in) after truncation."""
    fan_in = weight[0].numel()  # (out, in, kh, kw) or (out, in)
    std = math.sqrt(1.0 / fan_in) / _TRUNC_STD
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim))
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """big_vision / official-code init (see the module docstring)."""
        dim = self.attn.embed_dim
        for i in range(3):  # q, k, v: each its own D x D xavier-uniform map, as Flax's per-projection kernels
            nn.init.xavier_uniform_(self.attn.in_proj_weight[i * dim:(i + 1) * dim])
        nn.init.zeros_(self.attn.in_proj_bias)
        nn.init.xavier_uniform_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)
        for layer in (self.mlp[0], self.mlp[3]):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=MLP_BIAS_STD)
        for norm in (self.norm1, self.norm2):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)

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
        self.normalize = PixelStandardize(mean, std)
        self.patchify = nn.Conv2d(in_channels, width, patch, stride=patch)
        grid = image_size // patch
        self.register_buffer("pos", sincos_2d(grid, grid, width)[None], persistent=False)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_dim, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, num_classes)
        lecun_normal_(self.patchify.weight)
        nn.init.zeros_(self.patchify.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) pixels in [0, 1] -> (B, num_classes) logits."""
        x = self.patchify(self.normalize(x)).flatten(2).transpose(1, 2)  # (B, N, width), row-major patches
        x = self.blocks(x + self.pos.to(x.dtype))
        return self.head(self.norm(x).mean(1))


def vit_s16(num_classes: int, **kw) -> ViT:
    return ViT(num_classes, width=384, depth=12, heads=6, mlp_dim=1536, **kw)


def vit_b16(num_classes: int, **kw) -> ViT:
    return ViT(num_classes, width=768, depth=12, heads=12, mlp_dim=3072, **kw)
