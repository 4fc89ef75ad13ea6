"""Noise corruptions: gaussian_noise, shot_noise, impulse_noise, speckle_noise.

Severity constants transcribed from hendrycks/robustness `make_cifar_c.py` (cifar),
`make_tinyimagenet_c.py` (tiny) and `make_imagenet_c.py` (imagenet), all in `ImageNet-C/create_c/`.
All four act per element (per channel), so grayscale input needs no special meaning.
"""

from __future__ import annotations

import torch

# `gaussian_noise` in the create_c scripts: sigma of x + N(0, c^2).
GAUSSIAN_NOISE = {"cifar": (0.04, 0.06, .08, .09, .10),
                  "tiny": (0.04, 0.08, .12, .15, .18),
                  "imagenet": (.08, .12, 0.18, 0.26, 0.38)}
# `shot_noise` in the create_c scripts: photon count c of Poisson(x * c) / c.
SHOT_NOISE = {"cifar": (500, 250, 100, 75, 50),
              "tiny": (250, 100, 50, 30, 15),
              "imagenet": (60, 25, 12, 5, 3)}
# `impulse_noise` in the create_c scripts: skimage random_noise(mode='s&p', amount=c), salt_vs_pepper 0.5.
IMPULSE_NOISE = {"cifar": (.01, .02, .03, .05, .07),
                 "tiny": (.01, .02, .05, .08, .14),
                 "imagenet": (.03, .06, .09, 0.17, 0.27)}
# `speckle_noise` in the create_c scripts: sigma of x + x * N(0, c^2).
SPECKLE_NOISE = {"cifar": (.06, .1, .12, .16, .2),
                 "tiny": (.15, .2, 0.25, 0.3, 0.35),
                 "imagenet": (.15, .2, 0.35, 0.45, 0.6)}


def gaussian_noise(x: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    """x + N(0, c^2) per element, clipped. x: float (B, C, H, W) in [0, 1]."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + noise * c).clamp_(0, 1)


def shot_noise(x: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    """Poisson(x * c) / c per element, clipped."""
    return torch.poisson(x * c, generator=generator).div_(c).clamp_(0, 1)


def impulse_noise(x: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    """Salt and pepper: each element flips with probability c, to 1 or 0 with equal odds.

    Same distribution as skimage's `random_noise(mode='s&p')` (which draws the flip mask and the
    salt mask for every element); the random streams differ, so equality is statistical.
    """
    u = torch.rand((2,) + tuple(x.shape), generator=generator, device=x.device, dtype=x.dtype)
    flipped, salt = u[0] < c, u[1] < 0.5
    return torch.where(flipped, salt.to(x.dtype), x)


def speckle_noise(x: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    """x + x * N(0, c^2) per element, clipped."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + x * noise * c).clamp_(0, 1)
