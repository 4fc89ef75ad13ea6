"""The per-batch training transforms a run's data config asks for, applied on the device after the
loader's crop and flip: one corruption (paper Algorithm 2), fixed MixUp, AugMix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from damp import seeding
from damp.corruptions import corrupt_half
from damp.data.augment import mixup_fixed
from damp.data.augmix import augmix, jsd_triplets

if TYPE_CHECKING:  # the data layer sits below the config; it only reads the section's fields
    from damp.config.schema import DataConfig


def train_batch_transforms(d: DataConfig, seed: int, x: torch.Tensor, y: torch.Tensor, epoch: int, batch: int,
                           num_classes: int, shard: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """Train-on-a-corruption (Algorithm 2), fixed MixUp and AugMix of one training batch (B, C, H, W),
    each drawn from (seed, epoch, batch) so an exact resume redraws them. ``shard = (rank, world)``:
    this process's slice of the global batch; AugMix draws for the global batch, so it does not depend
    on the process count (the corruption and MixUp do; docs/fidelity.md). Returns (x, y); under
    AugMix's JSD loss B becomes 3B, laid out as the loss expects (:func:`damp.data.augmix.jsd_triplets`)."""
    if d.train_corruption is not None:
        corruption_seed = seeding.derive_seed(seed, seeding.TRAIN_CORRUPTION, epoch, batch)
        gen = torch.Generator(device=x.device).manual_seed(corruption_seed)
        # Severity 0: one severity 1-5 per batch, derived on the host (no device sync in the step loop).
        severity = d.train_corruption_severity or 1 + corruption_seed % 5
        x = corrupt_half(x, d.train_corruption, severity, gen, d.frost_dir)
    if d.mixup > 0:
        x, y = mixup_fixed(x, y, num_classes, d.mixup)
    if d.augmix:
        gen = torch.Generator(device=x.device).manual_seed(seeding.derive_seed(seed, seeding.AUGMIX, epoch, batch))
        options = {"width": d.augmix_width, "depth": d.augmix_depth, "severity": d.augmix_severity, "shard": shard}
        x, y = jsd_triplets(x, y, gen, **options) if d.augmix_jsd else (augmix(x, gen, **options), y)
    return x, y
