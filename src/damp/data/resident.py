"""A device-resident loader for small datasets (airbench style): no workers, on-device shuffling.

Images stay on the device as uint8 (or float) NCHW; each batch is an index slice of an on-device
permutation, converted to float [0, 1] and augmented in one batched call. The permutation is a pure
function of (seed, epoch) and each image's augmentation of (seed, epoch, dataset index), so a
resumed run can start in the middle of an epoch and draw exactly what an uninterrupted run would,
and N processes together see exactly the batches one process would (docs/fidelity.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from damp import seeding
from damp.pixels import to_unit_float

Augment = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B, C, H, W), uniforms (B, 4)) -> x
AUGMENT_DRAWS = 4  # uniforms per image handed to the augmentation


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool, device: torch.device | str = "cpu") -> torch.Tensor:
    """The sample order of an epoch: a permutation that is a pure function of (seed, epoch), or 0..n-1."""
    if not shuffle:
        return torch.arange(n, device=device)
    return torch.randperm(n, generator=seeding.generator(device, seed, seeding.ORDER, epoch), device=device)


def shard_size(n: int, world_size: int, drop_last: bool) -> int:
    """Samples per rank: the remainder is dropped (``drop_last``) or filled by wrapping around."""
    return n // world_size if drop_last else -(-n // world_size)


def num_batches(n: int, world_size: int, batch_size: int, drop_last: bool) -> int:
    per_rank = shard_size(n, world_size, drop_last)
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)


def shard(order: torch.Tensor, rank: int, world_size: int, batch_size: int, drop_last: bool) -> torch.Tensor:
    """This rank's part of ``order``, batch by batch: global batch b is ``order[b*W*B:(b+1)*W*B]``
    and rank r holds its r-th slice of B, so the global batches (and their sub-batches, in rank order)
    are the same for any number of processes. Every rank gets the same count, so none waits.

    Args:
        order: the epoch's sample order.
        batch_size: the per-process batch B.
        drop_last: drop the final incomplete global batch, else pad it by wrapping around.
    """
    total = shard_size(len(order), world_size, drop_last) * world_size
    if total > len(order):  # pad by wrapping
        order = torch.cat([order, order[: total - len(order)]])
    order = order[:total]
    full = total // (world_size * batch_size)
    head = order[: full * world_size * batch_size].view(full, world_size, batch_size)[:, rank].reshape(-1)
    tail = order[full * world_size * batch_size:].view(world_size, -1)[rank]
    return torch.cat([head, tail])


class ResidentLoader:
    """Iterable of (images float (B, C, H, W) in [0, 1], labels (B,)) over tensors kept on ``device``.

    Args:
        images: (N, C, H, W) uint8 or float [0, 1].
        labels: (N,) int64.
        batch_size: per-process batch size.
        shuffle: reshuffle every epoch (from ``seed`` and the epoch number).
        drop_last: drop the final incomplete batch (training).
        augment: optional batched augmentation ``f(x, uniforms) -> x``; uniforms (B, 4) in [0, 1)
            are each image's own, keyed by (seed, epoch, dataset index).
        seed: seed of the permutation and the augmentation.
        rank, world_size: shard every epoch's permutation across processes (DDP) by :func:`shard`;
            the remainder is dropped when ``drop_last``, else padded by wrapping around.
        device: where the data lives; defaults to the images' device.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 drop_last: bool = False, augment: Augment | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, device: torch.device | str | None = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size}")
        device = torch.device(device) if device is not None else images.device
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment, self.seed = augment, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    @property
    def device(self) -> torch.device:
        return self.images.device

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and augmentation the next iteration draws."""
        self.epoch = epoch

    def __len__(self) -> int:
        return num_batches(len(self.labels), self.world_size, self.batch_size, self.drop_last)

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, on the device."""
        order = epoch_order(len(self.labels), self.seed, self.epoch, self.shuffle, self.device)
        return shard(order, self.rank, self.world_size, self.batch_size, self.drop_last)

    def iter_from(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate this epoch's batches from ``start_batch`` on (for mid-epoch resume)."""
        order = self.indices()
        base = seeding.derive_seed(self.seed, seeding.AUGMENT, self.epoch)  # the epoch's augmentation key
        for b in range(start_batch, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[idx]
            x = to_unit_float(x)
            if self.augment is not None:
                x = self.augment(x, seeding.keyed_uniform(base, idx, AUGMENT_DRAWS))
            yield x, self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)
