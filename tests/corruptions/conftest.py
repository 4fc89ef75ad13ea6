"""Corruption test fixtures: smooth natural-ish images and the frost textures from shared/."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import FROST_DIR


# The sizes of the frost files in hendrycks/robustness `ImageNet-C/create_c/`, for stand-ins when the
# real textures are not beside the checkout.
TEXTURE_SIZES = {"frost1.png": (900, 600), "frost2.png": (560, 315), "frost3.png": (560, 315),
                 "frost4.jpg": (527, 350), "frost5.jpg": (660, 495), "frost6.jpg": (485, 323)}


@pytest.fixture(scope="session")
def frost_textures_dir(tmp_path_factory):
    """Tests and CI read the real textures from ../shared/assets/frost (never committed to the project).
    Without them, random stand-in textures of the documented sizes keep the contract tests running."""
    if FROST_DIR.is_dir():
        return FROST_DIR
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("frost-standins")
    rng = np.random.default_rng(0)
    for name, (w, h) in TEXTURE_SIZES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.fixture(autouse=True)
def frost_env(monkeypatch, frost_textures_dir):
    monkeypatch.setenv("DAMP_FROST_DIR", str(frost_textures_dir))


def smooth_images(b: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """(B, C, S, S) float images with structure at several scales (blurs must have something to blur)."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(b, channels, max(2, size // 4), max(2, size // 4), generator=g),
                           size=(size, size), mode="bilinear", align_corners=False)
    return (0.8 * coarse + 0.2 * torch.rand(b, channels, size, size, generator=g)).clamp(0, 1)
