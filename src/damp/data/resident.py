"""A device-resident loader for small datasets (airbench style): no workers, on-device shuffling.

Images stay on the device as uint8 (or float) NCHW; each batch is an index slice of an on-device
permutation, converted to float [0, 1] and augmented in one batched call. The permutation and the
augmentation randomness are pure functions of (seed, epoch, batch index), so a resumed run can
start in the middle of an epoch and draw exactly what an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from damp.methods.perturb import derive_seed

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class ResidentLoader:
    """Iterable of (images float (B, C, H, W) in [0, 1], labels (B,)) over tensors kept on ``device``.

    Args:
        images: (N, C, H, W) uint8 or float [0, 1].
        labels: (N,) int64.
        batch_size: per-process batch size.
        shuffle: reshuffle every epoch (from ``seed`` and the epoch number).
        drop_last: drop the final incomplete batch (training).
        augment: optional batched augmentation ``f(x, generator) -> x``.
        seed: seed of the permutation and the augmentation.
        rank, world_size: shard every epoch's permutation across processes (DDP); every rank gets the
            same number of samples (the remainder is dropped when ``drop_last``, else padded by
            wrapping around so no rank waits on another).
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

    def _per_rank(self) -> int:
        n = len(self.labels)
        return n // self.world_size if self.drop_last else -(-n // self.world_size)

    def __len__(self) -> int:
        per_rank = self._per_rank()
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, on the device."""
        n = len(self.labels)
        if self.shuffle:
            gen = torch.Generator(device=self.device).manual_seed(derive_seed(self.seed, self.epoch, 0))
            order = torch.randperm(n, generator=gen, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        total = self._per_rank() * self.world_size
        if total > n:  # pad by wrapping so every rank gets the same count
            order = torch.cat([order, order[: total - n]])
        return order[:total][self.rank::self.world_size]

    def iter_from(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate this epoch's batches from ``start_batch`` on (for mid-epoch resume)."""
        order = self.indices()
        for b in range(start_batch, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[idx]
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
            if self.augment is not None:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(derive_seed(self.seed, self.epoch, b + 1))
                x = self.augment(x, gen)
            yield x, self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)
