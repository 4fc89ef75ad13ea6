"""Noise corruptions: shapes/dtypes, determinism, severity ordering, and their statistics."""

from __future__ import annotations

import pytest
import torch

from damp import corruptions
from damp.corruptions import noise

NOISE = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"]


@pytest.mark.parametrize("name", NOISE)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_and_determinism(name, dtype, channels):
    x = torch.rand(3, channels, 32, 32)
    x = (x * 255).to(torch.uint8) if dtype == torch.uint8 else x
    a = corruptions.corrupt(x, name, 3, generator=torch.Generator().manual_seed(0))
    b = corruptions.corrupt(x, name, 3, generator=torch.Generator().manual_seed(0))
    c = corruptions.corrupt(x, name, 3, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == dtype and torch.equal(a, b) and not torch.equal(a, c)
    if dtype != torch.uint8:
        assert a.min() >= 0 and a.max() <= 1


@pytest.mark.parametrize("name", NOISE)
def test_strength_grows_with_severity(name):
    x = torch.rand(8, 3, 32, 32) * 0.6 + 0.2
    dist = [(corruptions.corrupt(x, name, s, generator=torch.Generator().manual_seed(0)) - x).abs().mean()
            for s in range(1, 6)]
    assert all(a < b for a, b in zip(dist, dist[1:]))


def test_gaussian_noise_std_matches_constant():
    x = torch.full((4, 3, 64, 64), 0.5)
    out = corruptions.corrupt(x, "gaussian_noise", 2, preset="tiny", generator=torch.Generator().manual_seed(0))
    assert (out - x).std().item() == pytest.approx(0.08, rel=0.02)


def test_impulse_noise_flips_the_expected_fraction():
    x = torch.full((4, 3, 64, 64), 0.5)
    out = corruptions.corrupt(x, "impulse_noise", 5, preset="imagenet", generator=torch.Generator().manual_seed(0))
    flipped = (out != 0.5).float().mean().item()
    assert flipped == pytest.approx(0.27, abs=0.01)
    assert (out == 1).float().mean().item() == pytest.approx(0.135, abs=0.01)


def test_shot_noise_is_poisson():
    x = torch.full((4, 3, 64, 64), 0.4)
    out = corruptions.corrupt(x, "shot_noise", 4, preset="imagenet", generator=torch.Generator().manual_seed(0))
    counts = out * 5  # c = 5 photons per unit: Poisson(2)
    assert counts.mean().item() == pytest.approx(2.0, rel=0.03)
    assert counts.var().item() == pytest.approx(2.0 - 0.0, rel=0.1)  # clipping at 1 -> 5 counts trims little


def test_constant_tables_are_verbatim():
    assert noise.GAUSSIAN_NOISE["cifar"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert noise.SHOT_NOISE["imagenet"] == (60, 25, 12, 5, 3)
    assert noise.IMPULSE_NOISE["tiny"] == (0.01, 0.02, 0.05, 0.08, 0.14)
    assert noise.SPECKLE_NOISE["cifar"] == (0.06, 0.1, 0.12, 0.16, 0.2)


def test_uint8_output_is_truncated_like_the_reference():
    x = torch.full((1, 1, 4, 4), 0.5)
    y = corruptions.corrupt((x * 255).to(torch.uint8), "gaussian_noise", 1, generator=torch.Generator().manual_seed(0))
    f = corruptions.corrupt((x * 255).to(torch.uint8).float() / 255, "gaussian_noise", 1,
                            generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, (f * 255).floor().to(torch.uint8))


@pytest.mark.parametrize("bad,match", [
    (torch.rand(3, 32, 32), "B, C, H, W"), (torch.rand(1, 2, 8, 8), "C = 1 or 3"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.int32), "uint8 or floating"),
])
def test_bad_input_raises_readable_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        corruptions.corrupt(bad, "gaussian_noise", 1)


def test_bad_name_severity_preset():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="Unknown corruption"):
        corruptions.corrupt(x, "nope", 1)
    with pytest.raises(ValueError, match="severity"):
        corruptions.corrupt(x, "gaussian_noise", 6)
    with pytest.raises(ValueError, match="preset"):
        corruptions.corrupt(x, "gaussian_noise", 1, preset="mnist")


def test_empty_batch():
    assert corruptions.corrupt(torch.rand(0, 3, 8, 8), "shot_noise", 1).shape == (0, 3, 8, 8)
