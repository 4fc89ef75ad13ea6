"""Tiny-ImageNet-200 from its standard layout, decoded into uint8 tensors (small enough to keep resident).

Layout: ``wnids.txt``; ``train/<wnid>/images/*.JPEG``; ``val/images/*.JPEG`` with
``val/val_annotations.txt`` (file, wnid, bbox per line). The test set is the official 10k val set,
as in the paper's code.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from damp.data.arrays import ArrayDataset
from damp.data.folders import load_rgb
from damp.data.idx import DataFormatError


def _decode(paths: list[Path], size: int = 64) -> torch.Tensor:
    def one(path: Path) -> np.ndarray:
        im = load_rgb(path)
        if im.size != (size, size):
            raise DataFormatError(f"{path}: expected a {size}x{size} image, got {im.size[0]}x{im.size[1]}")
        return np.asarray(im, dtype=np.uint8)

    with ThreadPoolExecutor(max_workers=4) as pool:
        arrays = list(pool.map(one, paths))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def load_tiny_imagenet(root: str | Path, max_train_images: int = 0) -> ArrayDataset:
    """Tiny-ImageNet-200 as uint8 (N, 3, 64, 64); class indices follow the order of ``wnids.txt``."""
    root = Path(root)
    wnids_file = root / "wnids.txt"
    if not wnids_file.is_file():
        raise FileNotFoundError(f"{wnids_file}: not found (is {root} the extracted tiny-imagenet-200 folder?)")
    wnids = [w.strip() for w in wnids_file.read_text().split() if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    train = []
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: missing training folder for class {wnid}")
        train += [(p, index[wnid]) for p in sorted(folder.glob("*.JPEG"))]
    if max_train_images:
        order = np.random.default_rng(0).permutation(len(train))[:max_train_images]
        train = [train[i] for i in sorted(order)]
    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise FileNotFoundError(f"{annotations}: not found")
    val = []
    for n, line in enumerate(annotations.read_text().splitlines(), 1):
        parts = line.split("\t")
        if not line.strip():
            continue
        if len(parts) < 2 or parts[1] not in index:
            raise DataFormatError(f"{annotations}:{n}: expected 'file<TAB>wnid<TAB>bbox...' with a known wnid")
        val.append((root / "val" / "images" / parts[0], index[parts[1]]))
    return ArrayDataset("tiny_imagenet", _decode([p for p, _ in train]), torch.tensor([c for _, c in train]),
                        _decode([p for p, _ in val]), torch.tensor([c for _, c in val]), num_classes=len(wnids))
