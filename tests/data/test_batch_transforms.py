from dataclasses import replace

import torch

from damp.config.schema import DataConfig
from damp.data.batch_transforms import train_batch_transforms


def _batch():
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(6) % 3


def test_each_transform_is_a_function_of_seed_epoch_and_batch():
    x, y = _batch()
    for data in (DataConfig(train_corruption="gaussian_noise", train_corruption_severity=3), DataConfig(augmix=True)):
        first, _ = train_batch_transforms(data, 7, x, y, epoch=2, batch=5, num_classes=3)
        again, _ = train_batch_transforms(data, 7, x, y, epoch=2, batch=5, num_classes=3)
        other_batch, _ = train_batch_transforms(data, 7, x, y, epoch=2, batch=6, num_classes=3)
        other_seed, _ = train_batch_transforms(data, 8, x, y, epoch=2, batch=5, num_classes=3)
        assert torch.equal(first, again)  # an exact resume redraws the same batch
        assert not torch.equal(first, x)
        assert not torch.equal(first, other_batch) and not torch.equal(first, other_seed)


def test_no_transform_leaves_the_batch_and_jsd_triples_it():
    x, y = _batch()
    same_x, same_y = train_batch_transforms(DataConfig(), 0, x, y, epoch=0, batch=0, num_classes=3)
    assert same_x is x and same_y is y
    jsd = replace(DataConfig(), augmix=True, augmix_jsd=True)
    x3, y3 = train_batch_transforms(jsd, 0, x, y, epoch=0, batch=0, num_classes=3)
    assert x3.shape == (18, 1, 12, 12) and torch.equal(y3, y.repeat_interleave(3))
    assert torch.equal(x3[0::3], x)  # the clean view first in every triplet, as the JSD loss reads it


def test_augmix_does_not_depend_on_how_many_processes_share_the_batch():
    x, y = _batch()
    for data in (DataConfig(augmix=True), DataConfig(augmix=True, augmix_jsd=True)):
        whole, whole_y = train_batch_transforms(data, 7, x, y, epoch=1, batch=2, num_classes=3)
        halves = [train_batch_transforms(data, 7, x[r * 3:(r + 1) * 3], y[r * 3:(r + 1) * 3], epoch=1, batch=2,
                                         num_classes=3, shard=(r, 2)) for r in range(2)]
        assert torch.equal(torch.cat([h[0] for h in halves]), whole)
        assert torch.equal(torch.cat([h[1] for h in halves]), whole_y)
