"""AugMix: the mixing weights' distribution, determinism under a seed, operations against PIL, no test
corruption among the operations, the JSD loss, and training with it under DAMP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from scipy import stats

from damp.corruptions import names as corruption_names
from damp.data.augmix import (OPERATIONS, affine, apply_operation, augmix, autocontrast, equalize, jsd_loss,
                              jsd_triplets, mixing_weights, posterize, solarize)


def images(n=6, c=3, size=16, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(seed)).float() / 255


def test_mixing_weights_are_dirichlet_one_and_beta_one():
    weights, m = mixing_weights(20000, 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(weights.sum(1), torch.ones(20000))
    assert (weights > 0).all() and ((m > 0) & (m < 1)).all()
    # A Dirichlet(1, 1, 1) marginal is Beta(1, 2): CDF 1 - (1 - x)^2; m ~ Beta(1, 1) = U(0, 1).
    assert stats.kstest(weights[:, 0].numpy(), lambda x: 1 - (1 - x) ** 2).pvalue > 0.01
    assert stats.kstest(m.numpy(), "uniform").pvalue > 0.01
    assert abs(float(weights[:, 1].mean()) - 1 / 3) < 0.01


def test_augmix_is_deterministic_under_a_seed_and_stays_in_range():
    x = images()
    a = augmix(x, torch.Generator().manual_seed(5))
    b = augmix(x, torch.Generator().manual_seed(5))
    c = augmix(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype and float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.equal(a, x)


@pytest.mark.parametrize("depth", [-1, 2])
def test_a_process_slice_gets_its_slice_of_the_global_batchs_augmix(depth):
    """shard=(rank, world): every process draws for the global batch, so N processes compute what one does."""
    x = images(n=12)
    whole = augmix(x, torch.Generator().manual_seed(3), depth=depth)
    for world in (2, 3):
        size = len(x) // world
        parts = [augmix(x[r * size:(r + 1) * size], torch.Generator().manual_seed(3), depth=depth, shard=(r, world))
                 for r in range(world)]
        assert torch.equal(torch.cat(parts), whole)
    alone = augmix(x[6:], torch.Generator().manual_seed(3), depth=depth)  # without shard: draws of its own
    assert not torch.equal(alone, whole[6:])


def test_no_operation_is_a_test_corruption():
    assert not set(OPERATIONS) & set(corruption_names("all"))
    assert not {"brightness", "contrast", "color", "sharpness"} & set(OPERATIONS)  # the official "all ops" extras
    with pytest.raises(ValueError, match="unknown AugMix operation"):
        apply_operation("contrast", images(), 3.0, torch.Generator())


def _pil(x: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for img in x]


def _tensor(pils: list[Image.Image]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(p)).permute(2, 0, 1) for p in pils]).float() / 255


def test_pointwise_operations_equal_pil():
    x = images(4)
    x[0] = x[0] * 0.5 + 0.2  # a narrow range for autocontrast to stretch
    pils = _pil(x)
    torch.testing.assert_close(equalize(x), _tensor([ImageOps.equalize(p) for p in pils]))
    torch.testing.assert_close(autocontrast(x), _tensor([ImageOps.autocontrast(p) for p in pils]))
    bits, threshold = torch.tensor([4, 3, 4, 3]), torch.tensor([231, 200, 256, 128])
    torch.testing.assert_close(posterize(x, bits), _tensor([ImageOps.posterize(p, int(b)) for p, b in zip(pils, bits)]))
    torch.testing.assert_close(solarize(x, threshold),
                               _tensor([ImageOps.solarize(p, int(t)) for p, t in zip(pils, threshold)]))


def test_affine_operations_match_pil_transform():
    x = images(2, size=32)
    pils = _pil(x)
    shift = affine(x, torch.tensor([[1.0, 0, 3, 0, 1, 0], [1.0, 0, 0, 0, 1, -2]]))
    expected = _tensor([p.transform((32, 32), Image.AFFINE, (1, 0, 3, 0, 1, 0), resample=Image.BILINEAR)
                        for p in pils[:1]] + [p.transform((32, 32), Image.AFFINE, (1, 0, 0, 0, 1, -2),
                                                          resample=Image.BILINEAR) for p in pils[1:]])
    torch.testing.assert_close(shift, expected, atol=1 / 255, rtol=0)  # integer shifts: exact up to rounding
    # Fractional positions, the border band included (PIL: edge pixels as neighbours, zero outside).
    for coefficients in [(1, 0.2, 0, 0, 1, 0), (1, 0, 0, -0.15, 1, 0), (0.99, -0.12, 2.1, 0.12, 0.99, -1.7)]:
        got = affine(x, torch.tensor([coefficients] * 2))
        pil = _tensor([p.transform((32, 32), Image.AFFINE, coefficients, resample=Image.BILINEAR) for p in pils])
        torch.testing.assert_close(got, pil, atol=1 / 255 + 1e-6, rtol=0)  # PIL rounds to uint8


def test_jsd_loss_is_the_cross_entropy_when_the_views_agree_and_grows_when_they_do_not():
    x, y = images(4), torch.tensor([0, 1, 2, 1])
    triplets, labels = jsd_triplets(x, y, torch.Generator().manual_seed(0))
    assert triplets.shape == (12, 3, 16, 16) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 1, 1, 1]
    assert torch.equal(triplets[0::3], x)  # the clean image first in every triplet
    logits = torch.randn(4, 5).repeat_interleave(3, dim=0)
    torch.testing.assert_close(jsd_loss(logits, labels), F.cross_entropy(logits[0::3], y))
    assert jsd_loss(logits + torch.randn(12, 5), labels) > F.cross_entropy(logits[0::3], y)


def test_damp_with_augmix_and_jsd_trains_deterministically(tmp_path):
    from damp.config import load_config
    from damp.train import train

    sets = ["trainer.device=cpu", "trainer.progress=false", "trainer.max_steps=3", "eval.corruptions=none",
            "data.batch_size=32", "method.name=damp", "method.std=0.1", "method.num_perturbations=4",
            "data.augmix=true", "data.augmix_jsd=true", "trainer.log_every=1"]
    first = train(load_config(None, sets), tmp_path / "a")
    second = train(load_config(None, sets), tmp_path / "b")
    assert first["clean"] == second["clean"]
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="data.augmix_jsd: needs data.augmix"):
        load_config(None, ["data.augmix_jsd=true"])


def test_the_border_comparison_script_isolates_the_border_pixels():
    """benchmarks/augmix_borders.py (the figure in docs/evidence.md): the earlier zero blend differs from
    PIL's edge handling only where a sample's neighbours leave the image."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "augmix_borders.py"
    spec = importlib.util.spec_from_file_location("augmix_borders", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    x = images(4, size=16)
    shear = torch.tensor([[1.0, 0.2, 0, 0, 1, 0]] * 4)  # samples at u = x + 0.2 y, v = y (pixel centres)
    differs = (script.zero_blended_affine(x, shear) != affine(x, shear)).any(1)
    centres = torch.arange(16.0) + 0.5
    v, u = centres.view(16, 1).expand(16, 16), centres.view(1, 16) + 0.2 * centres.view(16, 1)
    border = (u < 0.5) | (u >= 15.5) | (v < 0.5) | (v >= 15.5)  # a neighbour outside the image
    assert differs.any() and not (differs & ~border).any()
    result = script.compare(x)
    assert 0 < result["mean_abs_difference"] < result["mean_augmix_change"] and result["images"] == 4
