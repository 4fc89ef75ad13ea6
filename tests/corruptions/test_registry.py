"""Every corruption at every preset: shape, dtype, device, range, determinism, grayscale, severity."""

from __future__ import annotations

import pytest
import torch

from damp import corruptions
from tests.corruptions.conftest import smooth_images

SIZES = {"cifar": 32, "tiny": 64, "imagenet": 224}
ALL = corruptions.names()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_canonical_order_and_subsets():
    assert ALL == ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                   "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                   "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate"]
    assert corruptions.names("common") == ALL[:15] and corruptions.names("extra") == ALL[15:]
    assert all(len(p) == 5 for c in corruptions.CORRUPTIONS.values() for p in c.params.values())
    assert all(set(c.params) == {"cifar", "tiny", "imagenet"} for c in corruptions.CORRUPTIONS.values())


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("preset", ["cifar", "tiny", "imagenet"])
def test_float_batch_contract(name, preset):
    b = 2 if preset != "imagenet" else 1
    x = smooth_images(b, SIZES[preset])
    a = corruptions.corrupt(x, name, 3, preset=preset, generator=gen(0))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)
    assert torch.equal(a, corruptions.corrupt(x, name, 3, preset=preset, generator=gen(0)))


@pytest.mark.parametrize("name", ALL)
def test_uint8_grayscale_and_seeds(name):
    x = (smooth_images(3, 32, channels=1) * 255).to(torch.uint8)
    a = corruptions.corrupt(x, name, 5, generator=gen(0))
    assert a.shape == x.shape and a.dtype == torch.uint8
    deterministic = name in {"defocus_blur", "zoom_blur", "contrast", "brightness", "saturate", "pixelate",
                             "jpeg_compression", "gaussian_blur"}
    other = corruptions.corrupt(x, name, 5, generator=gen(1))
    assert torch.equal(a, other) == deterministic


def test_batch_sizes_zero_one_two():
    for b in (0, 1, 2):
        for name in ALL:
            assert corruptions.corrupt(torch.rand(b, 3, 32, 32), name, 2, generator=gen(0)).shape == (b, 3, 32, 32)


def test_batch_items_are_independent_of_batch_composition_for_deterministic_ones():
    x = smooth_images(4, 32)
    for name in ("zoom_blur", "defocus_blur", "pixelate", "jpeg_compression", "contrast"):
        whole = corruptions.corrupt(x, name, 4)
        assert torch.allclose(whole[2:], corruptions.corrupt(x[2:], name, 4), atol=1e-6)


def test_preset_defaults_from_size():
    from damp.corruptions._common import default_preset
    assert [default_preset(s, s) for s in (28, 32, 33, 64, 65, 224)] == ["cifar", "cifar", "tiny", "tiny",
                                                                         "imagenet", "imagenet"]


def mad(name, preset, x, severity):
    return (corruptions.corrupt(x, name, severity, preset=preset, generator=gen(1)) - x).abs().mean().item()


# Where the reference's own constants make the mean change grow strictly with severity.
STRICTLY_MONOTONE = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "fog", "brightness",
                     "contrast", "speckle_noise", "gaussian_blur"]


@pytest.mark.parametrize("preset", ["cifar", "tiny"])
@pytest.mark.parametrize("name", STRICTLY_MONOTONE)
def test_strength_grows_with_severity(name, preset):
    x = smooth_images(8, SIZES[preset])
    d = [mad(name, preset, x, s) for s in range(1, 6)]
    assert all(a < b for a, b in zip(d, d[1:])), d


@pytest.mark.parametrize("name", [n for n in ALL if n != "elastic_transform"])
def test_severity_five_is_stronger_than_one(name):
    """Elastic is excluded on purpose: the reference shrinks its affine jitter as severity grows
    (cifar 2.56 -> 0.96 px) while the smooth displacement stays small, so severity 1 moves pixels more."""
    x = smooth_images(8, 32)
    assert mad(name, "cifar", x, 5) > mad(name, "cifar", x, 1)


def test_generator_on_wrong_device_is_rejected():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    with pytest.raises(ValueError, match="generator"):
        corruptions.corrupt(torch.rand(1, 3, 8, 8), "gaussian_noise", 1,
                            generator=torch.Generator(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL)
def test_cuda_matches_shape_and_device(name):
    x = smooth_images(2, 32).cuda()
    y = corruptions.corrupt(x, name, 3, generator=torch.Generator(device="cuda").manual_seed(0))
    assert y.device == x.device and y.shape == x.shape


def test_a_named_frost_folder_is_the_only_one_looked_in(tmp_path, monkeypatch, frost_textures_dir):
    from damp.corruptions.assets import FrostUnavailable, find_frost_dir

    monkeypatch.setenv("DAMP_FROST_DIR", str(frost_textures_dir))
    assert find_frost_dir() == frost_textures_dir  # no folder named: the environment's
    with pytest.raises(FrostUnavailable, match=str(tmp_path)) as raised:
        find_frost_dir(tmp_path)  # named but empty: an error, not the environment's copy
    assert str(frost_textures_dir) not in str(raised.value)
    monkeypatch.delenv("DAMP_FROST_DIR")
    assert find_frost_dir(frost_textures_dir) == frost_textures_dir
