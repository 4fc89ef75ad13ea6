"""Build the training and test data of a run from its config, behind the one loader protocol."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from damp import seeding
from damp.data.arrays import ArrayDataset
from damp.data.augment import crop_flip
from damp.data.folders import decodable
from damp.data.imagenet import FolderDataset, FolderLoader, imagenet_samples
from damp.data.resident import ResidentLoader

# Per-channel normalisation (applied inside the model), as the official code (trungtrinh44/DAMP, datasets.py
# and the ImageNet loaders); docs/fidelity.md.
STATS = {
    "digits": ((0.5,), (0.5,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny_imagenet": ((122.4786 / 255, 114.2755 / 255, 101.3963 / 255), (70.4924 / 255, 68.5679 / 255, 71.8127 / 255)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
VIT_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # ViT inputs are normalised to [-1, 1]
DATASETS = tuple(STATS)
AUGMENTS = ("auto", "none", "crop", "crop_flip", "inception", "inception_randaugment")
AUTO_AUGMENT = {"digits": "crop", "fashion_mnist": "crop_flip", "cifar10": "crop_flip", "cifar100": "crop_flip",
                "tiny_imagenet": "crop_flip", "imagenet": "inception"}


@dataclass
class DataBundle:
    """What the trainer needs: loaders plus the facts the model and evaluation depend on."""

    train: Any  # loader protocol: iterable of (x float [0, 1], y), len, set_epoch, iter_from
    test: Any  # same protocol, no shuffling
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    test_arrays: tuple[torch.Tensor, torch.Tensor] | None  # resident uint8 test set, when small
    classes: list[str] | None = None
    skipped_images: int = 0  # undecodable images dropped (data.skip_bad_images)
    holdout: Any = None  # loader over the held-out training images (data.holdout), else None
    train_plain: Any = None  # the training images without augmentation, in order (resident datasets)


def load_arrays(name: str, root: str | None, max_train_images: int = 0, max_test_images: int = 0) -> ArrayDataset:
    """The dataset as resident arrays; the first ``max_*_images`` of a split when nonzero."""
    from damp.data import load_array_dataset

    if name == "tiny_imagenet":
        from damp.data.tiny_imagenet import load_tiny_imagenet
        if root is None:
            raise ValueError("data.root: tiny_imagenet needs the extracted tiny-imagenet-200 folder")
        data = load_tiny_imagenet(root, max_train_images)
    else:
        data = load_array_dataset(name, root)
    train, test = (max_train_images or None), (max_test_images or None)
    if train or test:
        data = ArrayDataset(data.name, data.train_images[:train], data.train_labels[:train],
                            data.test_images[:test], data.test_labels[:test], data.num_classes)
    return data


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held-out) indices of n training samples: a fixed random ``fraction`` is held out.

    The split depends on ``seed`` alone (data.holdout_seed), not on the run's seed, so every run of a
    sweep tunes on the same images. Indices are sorted, so the kept set keeps the dataset order.
    """
    order = torch.randperm(n, generator=seeding.generator("cpu", seed, seeding.HOLDOUT))
    held = round(fraction * n)
    return order[held:].sort().values, order[:held].sort().values


def build_data(cfg, *, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
               vit: bool = False, need_train: bool = True) -> DataBundle:
    """Loaders for ``cfg`` (a RunConfig). The per-process batch is data.batch_size / world_size.

    ``need_train=False`` (evaluation) skips decoding the training images where it can.
    """
    d = cfg.data
    if not need_train:
        d = replace(d, max_train_images=1)
    if d.batch_size % world_size:
        raise ValueError(f"data.batch_size: {d.batch_size} is not divisible by the {world_size} processes")
    augment = AUTO_AUGMENT[d.name] if d.augment == "auto" else d.augment
    shard = {"rank": rank, "world_size": world_size, "device": device}
    if d.name == "imagenet":
        return _folder_data(d, augment, cfg.seed, d.batch_size // world_size, vit, shard)
    return _array_data(d, augment, cfg.seed, d.batch_size // world_size, vit, shard, need_train)


def _folder_data(d, augment: str, seed: int, per_rank: int, vit: bool, shard: dict) -> DataBundle:
    """ImageNet-style class folders through PIL and a DataLoader."""
    if d.root is None:
        raise ValueError("data.root: imagenet needs a folder with train/ and val/ class folders")
    if augment not in ("none", "inception", "inception_randaugment"):
        raise ValueError(f"data.augment: {augment!r} does not apply to folder datasets")
    train_samples, classes = imagenet_samples(d.root, "train")
    if d.max_train_images:
        train_samples = train_samples[:: max(1, len(train_samples) // d.max_train_images)][:d.max_train_images]
    holdout_samples = []
    if d.holdout > 0:
        kept, held = holdout_split(len(train_samples), d.holdout, d.holdout_seed)
        holdout_samples = [train_samples[i] for i in held.tolist()]
        train_samples = [train_samples[i] for i in kept.tolist()]
    val_samples, _ = imagenet_samples(d.root, "val", classes)
    if d.max_test_images:
        val_samples = val_samples[:: max(1, len(val_samples) // d.max_test_images)][:d.max_test_images]
    skipped = 0
    if d.skip_bad_images:
        train_ok, val_ok = decodable(train_samples), decodable(val_samples)
        skipped = len(train_samples) - len(train_ok) + len(val_samples) - len(val_ok)
        train_samples, val_samples = train_ok, val_ok
    area = (0.05, 1.0) if vit else (0.08, 1.0)  # ViT crops use area (0.05, 1) (official ViT loader)
    workers, device = d.num_workers, shard["device"]
    train = FolderLoader(FolderDataset(train_samples, d.image_size, augment, seed, area), per_rank, shuffle=True,
                         drop_last=True, seed=seed, num_workers=workers, **shard)

    def evaluation(samples):
        return FolderLoader(FolderDataset(samples, d.image_size, "none"), d.eval_batch_size, shuffle=False,
                            drop_last=False, num_workers=workers, device=device)
    mean, std = VIT_STATS if vit else STATS[d.name]
    return DataBundle(train, evaluation(val_samples), len(classes), 3, d.image_size, mean, std, None, classes,
                      skipped, evaluation(holdout_samples) if holdout_samples else None)


def _array_data(d, augment: str, seed: int, per_rank: int, vit: bool, shard: dict, need_train: bool
                ) -> DataBundle:
    """Small datasets resident on the device, augmented in batches."""
    device = shard["device"]
    data = load_arrays(d.name, d.root, d.max_train_images, d.max_test_images)
    holdout = None
    if d.holdout > 0:
        kept, held = holdout_split(len(data.train_labels), d.holdout, d.holdout_seed)
        holdout = ResidentLoader(data.train_images[held], data.train_labels[held], d.eval_batch_size, device=device)
        data = ArrayDataset(data.name, data.train_images[kept], data.train_labels[kept], data.test_images,
                            data.test_labels, data.num_classes)
    if augment not in ("none", "crop", "crop_flip"):
        raise ValueError(f"data.augment: {augment!r} applies to folder datasets only")
    padding, flip = d.crop_padding, augment == "crop_flip"
    fn = None if augment == "none" else (lambda x, u: crop_flip(x, u, padding=padding, flip=flip))
    train = ResidentLoader(data.train_images, data.train_labels, per_rank, shuffle=True, drop_last=True, augment=fn,
                           seed=seed, **shard)
    if len(train) == 0 and need_train:
        raise ValueError(f"data.batch_size: {d.batch_size} is larger than the {len(data.train_labels)} training images")
    test = ResidentLoader(data.test_images, data.test_labels, d.eval_batch_size, device=device)
    mean, std = VIT_STATS if vit else STATS[d.name]
    return DataBundle(train, test, data.num_classes, data.in_channels, data.image_size, mean, std,
                      (data.test_images, data.test_labels), holdout=holdout,
                      train_plain=ResidentLoader(data.train_images, data.train_labels, d.eval_batch_size,
                                                 device=device))
