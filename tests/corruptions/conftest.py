"""Corruption test fixtures: smooth natural-ish images and the frost textures from shared/."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import FROST_DIR


@pytest.fixture(autouse=True)
def frost_env(monkeypatch):
    """Tests and CI read the textures from ../shared/assets/frost (never committed to the project)."""
    if FROST_DIR.is_dir():
        monkeypatch.setenv("DAMP_FROST_DIR", str(FROST_DIR))


def smooth_images(b: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """(B, C, S, S) float images with structure at several scales (blurs must have something to blur)."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(b, channels, max(2, size // 4), max(2, size // 4), generator=g),
                           size=(size, size), mode="bilinear", align_corners=False)
    return (0.8 * coarse + 0.2 * torch.rand(b, channels, size, size, generator=g)).clamp(0, 1)
