"""Small datasets written in the real on-disk formats, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from damp.data.cifar import write_cifar_fixture


def make_cifar(root: Path, num_classes: int = 10, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    write_cifar_fixture(root, rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                        rng.integers(0, num_classes, n), num_classes)
    return root


def make_tiny_imagenet(root: Path, classes: int = 3, per_class: int = 6, val: int = 6) -> Path:
    rng = np.random.default_rng(0)
    wnids = [f"n{idx:08d}" for idx in range(classes)]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{wnid}_{i}.JPEG")
    lines = []
    for i in range(val):
        name = f"val_{i}.JPEG"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "val" / "images" / name)
        lines.append(f"{name}\t{wnids[i % classes]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def make_imagenet(root: Path, classes: int = 3, per_class: int = 6, val_per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)), 3)
                Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(folder / f"img_{i}.JPEG")
    return root
