"""How much AugMix's border handling changed: PIL's (edge pixels as the neighbours of points inside
the image, zero outside; `damp.data.augmix.affine`) against the earlier bilinear blend with zero.

    python benchmarks/augmix_borders.py [--images 2000] [--out FILE.json]

Both versions AugMix the same Fashion-MNIST training images (apt-get install dataset-fashion-mnist)
with the same generator, so they differ only in the rotations' and shears' border pixels. Reports the
mean |difference| per pixel, the share of pixels that differ by more than 1/255, and, for scale, the
mean change AugMix makes to a pixel (docs/evidence.md, the under-fitted suite's AugMix arms).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from damp.data import augmix as augmix_module
from damp.data.fashion_mnist import load_fashion_mnist
from damp.pixels import to_unit_float


def zero_blended_affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """The earlier `affine`: the same sample positions, but every missing neighbour is zero."""
    b, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype) + 0.5, torch.arange(w, dtype=x.dtype) + 0.5,
                            indexing="ij")
    a, bb, c, d, e, f = (matrix[:, i].view(b, 1, 1).to(x.dtype) for i in range(6))
    grid = torch.stack([2 * (a * xs + bb * ys + c) / w - 1, 2 * (d * xs + e * ys + f) / h - 1], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def compare(images: torch.Tensor, seed: int = 0) -> dict:
    """The two versions' AugMix of ``images`` (N, C, H, W) in [0, 1], with one generator seed."""
    pil = augmix_module.augmix(images, torch.Generator().manual_seed(seed))
    with mock.patch.object(augmix_module, "affine", zero_blended_affine):
        zero = augmix_module.augmix(images, torch.Generator().manual_seed(seed))
    difference = (pil - zero).abs()
    return {"images": len(images), "mean_abs_difference": float(difference.mean()),
            "share_over_1_255": float((difference > 1 / 255).float().mean()),
            "mean_augmix_change": float((pil - images).abs().mean())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="training images to AugMix (default: 2000)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    train = torch.as_tensor(load_fashion_mnist().train_images[:args.images])
    images = to_unit_float(train if train.dim() == 4 else train.unsqueeze(1))
    result = compare(images)
    print(f"{result['images']} images: mean |difference| {result['mean_abs_difference']:.2e} per pixel, "
          f"{100 * result['share_over_1_255']:.2f} % of pixels over 1/255; AugMix changes a pixel by "
          f"{result['mean_augmix_change']:.2e} on average")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
