"""The embedded digits set, the device-resident loader and the batched augmentations."""

from __future__ import annotations

import torch

from damp.data import ResidentLoader, load_digits
from damp.data.augment import crop_flip, random_crop


def test_digits_split_is_fixed_and_stratified():
    a, b = load_digits(), load_digits()
    assert a.train_images.shape == (1347, 1, 32, 32) and a.test_images.shape == (450, 1, 32, 32)
    assert a.train_images.dtype == torch.uint8 and torch.equal(a.test_labels, b.test_labels)
    counts = torch.bincount(a.test_labels, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47
    assert a.train_images.max() == 255


def test_loader_covers_every_sample_once_per_epoch_and_reshuffles():
    x = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1) / 255
    y = torch.arange(10)
    loader = ResidentLoader(x, y, 3, shuffle=True, seed=0)
    assert len(loader) == 4
    first = torch.cat([b for _, b in loader])
    assert sorted(first.tolist()) == list(range(10))
    loader.set_epoch(1)
    second = torch.cat([b for _, b in loader])
    assert not torch.equal(first, second)
    loader.set_epoch(0)
    assert torch.equal(torch.cat([b for _, b in loader]), first)


def test_loader_rank_sharding_is_disjoint_and_equal_sized():
    y = torch.arange(11)
    x = torch.zeros(11, 1, 2, 2)
    shards = [torch.cat([b for _, b in ResidentLoader(x, y, 2, shuffle=True, drop_last=True, rank=r,
                                                       world_size=2, seed=5)]) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_mid_epoch_resume_draws_the_same_batches():
    x = torch.rand(20, 1, 8, 8)
    y = torch.arange(20)
    aug = lambda b, u: crop_flip(b, u, padding=2)  # noqa: E731
    loader = ResidentLoader(x, y, 4, shuffle=True, augment=aug, seed=1)
    full = list(loader)
    tail = list(loader.iter_from(3))
    for (xa, ya), (xb, yb) in zip(full[3:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_random_crop_moves_content_and_keeps_shape():
    x = torch.zeros(64, 1, 5, 5)
    x[:, :, 2, 2] = 1
    out = random_crop(x, 1, torch.rand(64, 2, generator=torch.Generator().manual_seed(0)))
    assert out.shape == x.shape
    positions = {tuple((img[0] == 1).nonzero()[0].tolist()) for img in out}
    assert positions == {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)}


def test_one_process_and_two_see_the_same_global_batches_and_augmentation():
    """Rank r holds slice r of every global batch, and an image's crop/flip is keyed by its index."""
    x = torch.rand(23, 1, 6, 6)
    y = torch.arange(23)
    aug = lambda b, u: crop_flip(b, u, padding=2)  # noqa: E731
    one = list(ResidentLoader(x, y, 4, shuffle=True, drop_last=True, augment=aug, seed=3))
    ranks = [list(ResidentLoader(x, y, 2, shuffle=True, drop_last=True, augment=aug, seed=3, rank=r, world_size=2))
             for r in range(2)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 5
    for (xa, ya), (x0, y0), (x1, y1) in zip(one, *ranks):
        assert torch.equal(ya, torch.cat([y0, y1]))
        assert torch.equal(xa, torch.cat([x0, x1]))
