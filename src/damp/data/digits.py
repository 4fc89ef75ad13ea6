"""scikit-learn's embedded digits (1797 images, 8x8, 10 classes), upsampled, with a fixed split."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from damp.data.arrays import ArrayDataset


def load_digits(image_size: int = 32, test_fraction: float = 0.25, split_seed: int = 0) -> ArrayDataset:
    """Digits as uint8 (N, 1, S, S) images with a fixed, stratified train/test split.

    The 0-16 grey levels are scaled to [0, 1] and bilinearly upsampled from 8 px to ``image_size``,
    so 32-px CIFAR-preset corruptions apply unchanged. The split depends only on ``split_seed``.
    """
    from sklearn.datasets import load_digits as sklearn_digits  # local: sklearn import is slow

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    rng = np.random.default_rng(split_seed)
    test_idx = []
    for c in range(10):  # stratified: the same fraction of every class goes to the test set
        members = np.flatnonzero(bunch.target == c)
        test_idx += list(rng.permutation(members)[: int(round(len(members) * test_fraction))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    train, test = torch.from_numpy(~is_test), torch.from_numpy(is_test)
    return ArrayDataset("digits", images[train], labels[train], images[test], labels[test], num_classes=10)
