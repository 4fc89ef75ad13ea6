"""Shared fixtures: small deterministic models and batches, plus paths to shared test assets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
# Frost textures for tests only; never committed (they live beside the checkout, in shared/).
FROST_DIR = REPO.parent / "shared" / "assets" / "frost"


def small_cnn(num_classes: int = 3, batchnorm: bool = True) -> nn.Module:
    """A tiny conv net; with ``batchnorm=False`` it is BN-free (deterministic per-sample)."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    layers += [nn.BatchNorm2d(4)] if batchnorm else [nn.GroupNorm(2, 4)]
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, num_classes)]
    return nn.Sequential(*layers).double()


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 1, 6, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=gen)
    return x, y


@pytest.fixture
def frost_dir() -> Path:
    if not FROST_DIR.is_dir():
        pytest.skip(f"frost textures not found at {FROST_DIR}")
    return FROST_DIR
