"""CIFAR-10 / CIFAR-100 from the standard python-pickle folders (cifar-10-batches-py, cifar-100-python)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from damp.data.arrays import ArrayDataset
from damp.data.idx import DataFormatError

LAYOUT = {10: (["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"], ["test_batch"],
               b"labels"),
          100: (["train"], ["test"], b"fine_labels")}


class _Restricted(pickle.Unpickler):
    """Only builtins and numpy arrays: a CIFAR batch never needs more, and a foreign pickle is refused."""

    def find_class(self, module, name):
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in (
                "_reconstruct", "ndarray", "dtype", "scalar"):
            return getattr(__import__(module, fromlist=[name]), name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing CIFAR batch file")
    try:
        with open(path, "rb") as f:
            batch = _Restricted(f, encoding="bytes").load()
    except Exception as err:  # any unpickling failure is a format error naming the file
        raise DataFormatError(f"{path}: not a CIFAR python-pickle batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataFormatError(f"{path}: missing b'data' or {label_key!r}")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataFormatError(f"{path}: data must be (N, 3072) uint8, got {data.shape}")
    if len(data) != len(labels):
        raise DataFormatError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(root: str | Path, num_classes: int = 10) -> ArrayDataset:
    """CIFAR-10 (num_classes=10) or CIFAR-100 (100, fine labels) as uint8 (N, 3, 32, 32)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: CIFAR-{num_classes} folder not found")
    train_files, test_files, key = LAYOUT[num_classes]
    parts = {}
    for split, files in (("train", train_files), ("test", test_files)):
        batches = [_read_batch(root / f, key) for f in files]
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataFormatError(f"{root}: {split} labels outside 0-{num_classes - 1}")
        parts[split] = (torch.from_numpy(images), torch.from_numpy(labels))
    return ArrayDataset(f"cifar{num_classes}", *parts["train"], *parts["test"], num_classes=num_classes)


def write_cifar_fixture(root: str | Path, images: np.ndarray, labels: np.ndarray, num_classes: int = 10,
                        test_images: np.ndarray | None = None, test_labels: np.ndarray | None = None) -> None:
    """Write a small dataset in the CIFAR python-pickle layout (for tests and examples)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    train_files, test_files, key = LAYOUT[num_classes]
    test_images = images if test_images is None else test_images
    test_labels = labels if test_labels is None else test_labels
    chunks = np.array_split(np.arange(len(images)), len(train_files))
    for name, idx in zip(train_files, chunks):
        with open(root / name, "wb") as f:
            pickle.dump({b"data": images[idx].reshape(len(idx), 3072), key: labels[idx].tolist()}, f)
    with open(root / test_files[0], "wb") as f:
        pickle.dump({b"data": test_images.reshape(len(test_images), 3072), key: test_labels.tolist()}, f)
