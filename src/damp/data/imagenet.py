"""ImageNet-style class folders through a DataLoader with PIL decoding, behind the loader protocol.

The loader shards a per-epoch permutation (a pure function of seed and epoch) across ranks and seeds
each sample's augmentation from (seed, epoch, sample index), so order and augmentation do not
depend on the number of workers, and ``iter_from(batch)`` resumes mid-epoch exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from damp.data.folders import load_rgb, scan_class_folders, to_tensor_u8
from damp.data.idx import DataFormatError
from damp.data.pil_augment import center_crop_eval, hflip, inception_crop, randaugment
from damp.data.resident import epoch_order, num_batches, shard
from damp import seeding
from damp.pixels import to_unit_float


class FolderDataset(Dataset):
    """(uint8 (3, S, S), label) for ``samples``; ``augment``: "none" (eval crop), "inception",
    "inception_randaugment"."""

    def __init__(self, samples: list[tuple[Path, int]], image_size: int, augment: str, seed: int = 0,
                 inception_area: tuple[float, float] = (0.08, 1.0)) -> None:
        self.samples, self.image_size, self.augment, self.seed = samples, image_size, augment, seed
        self.inception_area = inception_area
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | DataFormatError:
        """The sample, or the DataFormatError of an undecodable file, returned rather than raised so
        the loader re-raises it in the main process with its own one-line message (an error raised in
        a DataLoader worker comes back wrapped in the worker's traceback text)."""
        path, label = self.samples[i]
        try:
            im = load_rgb(path)
        except DataFormatError as err:
            return err
        if self.augment == "none":
            im = center_crop_eval(im, self.image_size)
        else:
            rng = np.random.default_rng(seeding.derive_seed(self.seed, seeding.AUGMENT, self.epoch, i))
            im = hflip(inception_crop(im, rng, self.image_size, self.inception_area), rng)
            if self.augment == "inception_randaugment":
                im = randaugment(im, rng, 2, 10.0)
        return to_tensor_u8(im), label


class FolderLoader:
    """Iterable of (float (B, 3, S, S) in [0, 1], labels) over a :class:`FolderDataset`."""

    def __init__(self, dataset: FolderDataset, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_workers: int = 4, device: torch.device | str = "cpu"
                 ) -> None:
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_workers, self.device = num_workers, torch.device(device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.epoch = epoch

    def __len__(self) -> int:
        return num_batches(len(self.dataset), self.world_size, self.batch_size, self.drop_last)

    def indices(self) -> list[int]:
        """This rank's sample indices for the current epoch (the resident loader's sharding)."""
        order = epoch_order(len(self.dataset), self.seed, self.epoch, self.shuffle)
        return shard(order, self.rank, self.world_size, self.batch_size, self.drop_last).tolist()

    def iter_from(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices()
        batches = [order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(start_batch, len(self))]
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers, collate_fn=_collate,
                            pin_memory=self.device.type == "cuda", persistent_workers=False)
        for batch in loader:
            if isinstance(batch, DataFormatError):
                raise batch
            x, y = batch
            yield (to_unit_float(x.to(self.device, non_blocking=True)),
                   y.to(self.device, non_blocking=True))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor] | DataFormatError:
    """Stack (image, label) items; a batch holding an unreadable file becomes that file's error."""
    for item in items:
        if isinstance(item, DataFormatError):
            return item
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def imagenet_samples(root: str | Path, split: str, classes: list[str] | None = None
                     ) -> tuple[list[tuple[Path, int]], list[str]]:
    """Samples of ``root/<split>/<class>/<file>``; the val classes are the train classes."""
    return scan_class_folders(Path(root) / split, classes)
