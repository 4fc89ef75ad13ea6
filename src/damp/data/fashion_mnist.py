"""Fashion-MNIST from its IDX files (Debian's `dataset-fashion-mnist` puts them in the default folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from damp.data.arrays import ArrayDataset
from damp.data.idx import DataFormatError, read_idx

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root}: missing {stem}.gz (install `dataset-fashion-mnist` or point data.root at "
                            "the folder with the four IDX files)")


def load_fashion_mnist(root: str | Path | None = None) -> ArrayDataset:
    """Fashion-MNIST as uint8 (N, 1, 28, 28) images and int64 labels (60k train, 10k test)."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: Fashion-MNIST folder not found (apt-get install dataset-fashion-mnist)")
    arrays = {k: read_idx(_find(root, stem)) for k, stem in FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise DataFormatError(f"{root}: {split} images must be (N, H, W) and labels (N,), got "
                                  f"{images.shape} and {labels.shape}")
        if len(images) != len(labels):
            raise DataFormatError(f"{root}: {len(images)} {split} images but {len(labels)} labels")
        if labels.size and labels.max() > 9:
            raise DataFormatError(f"{root}: {split} labels out of range 0-9 (max {labels.max()})")

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.copy())

    return ArrayDataset("fashion_mnist", t(arrays["train_images"])[:, None], t(arrays["train_labels"]).long(),
                        t(arrays["test_images"])[:, None], t(arrays["test_labels"]).long(), num_classes=10)
