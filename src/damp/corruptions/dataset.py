"""Corrupted datasets: seeded chunked generation, the released -C layouts, writers and readers.

Layouts (as written by hendrycks/robustness `make_cifar_c.py` / `make_imagenet_c.py`; see
hendrycks/robustness#21):
- arrays (CIFAR-10-C): ``<corruption>.npy`` uint8 (S*N, H, W, C), severity-major (rows
  [(s-1)N, sN) hold severity s, test-set order inside), plus ``labels.npy`` (the labels repeated).
- folders (Tiny-ImageNet-C, ImageNet-C): ``<corruption>/<severity>/<class>/<file>``, JPEG quality 85.

On-the-fly evaluation and the writers draw the same randomness: chunk b of corruption c at
severity s always uses the generator seed f(seed, c, s, b) with the fixed chunk size ``CHUNK``.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from damp.corruptions import CANONICAL_NAMES, corrupt, get
from damp.data.idx import DataFormatError
from damp import seeding
from damp.corruptions._common import SEVERITIES

CHUNK = 250  # images per generator draw: part of the seeding contract, do not change lightly
JPEG_QUALITY = 85  # the reference saves Tiny-ImageNet-C / ImageNet-C as JPEG quality 85


def chunk_seed(seed: int, name: str, severity: int, chunk_index: int) -> int:
    """The generator seed of one chunk: f(seed, corruption, severity, chunk index)."""
    return seeding.derive_seed(seed, seeding.CORRUPTION_CHUNK, zlib.crc32(name.encode()), severity, chunk_index)


def corrupted_chunks(images: torch.Tensor, name: str, severity: int, *, seed: int = 0,
                     device: torch.device | str = "cpu", preset: str | None = None,
                     frost_dir: str | None = None) -> Iterator[torch.Tensor]:
    """Yield corrupted chunks of ``CHUNK`` images (the last may be shorter), on ``device``.

    Args:
        images: (N, C, H, W) uint8 or float [0, 1] on any device; each chunk is moved to ``device``.
    """
    get(name)
    device = torch.device(device)
    for index, start in enumerate(range(0, len(images), CHUNK)):
        yield corrupt_chunk(images[start:start + CHUNK].to(device), name, severity, index, seed=seed,
                            preset=preset, frost_dir=frost_dir)


def corrupt_chunk(x: torch.Tensor, name: str, severity: int, chunk_index: int, *, seed: int = 0,
                  preset: str | None = None, frost_dir: str | None = None) -> torch.Tensor:
    """Chunk ``chunk_index`` (images [index * CHUNK, (index + 1) * CHUNK) of the set, (B, C, H, W) on
    its device) corrupted with that chunk's generator: the one place the seeding contract is applied."""
    gen = torch.Generator(device=x.device).manual_seed(chunk_seed(seed, name, severity, chunk_index))
    return corrupt(x, name, severity, preset=preset, generator=gen, frost_dir=frost_dir)


def _atomic_npy(path: Path, shape: tuple, fill: Callable[[np.ndarray], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    fill(array)
    array.flush()
    del array
    os.replace(tmp, path)


def write_array_c(out: str | Path, images: torch.Tensor, labels: torch.Tensor, names: Sequence[str],
                  severities: Sequence[int] = SEVERITIES, *, seed: int = 0, device: str = "cpu",
                  preset: str | None = None, frost_dir: str | None = None,
                  progress: Callable[[str, int], None] | None = None) -> None:
    """Write the CIFAR-10-C layout for uint8 (N, C, H, W) images: one .npy per corruption + labels.npy.

    Each file is written to a temporary name and renamed, so an interrupted run leaves no partial
    `<corruption>.npy`. ``meta.json`` records the severities, seed and preset.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n, c, h, w = images.shape
    for name in names:
        def fill(array: np.ndarray, name: str = name) -> None:
            for k, severity in enumerate(severities):
                row = k * n
                for chunk in corrupted_chunks(images, name, severity, seed=seed, device=device, preset=preset,
                                              frost_dir=frost_dir):
                    chunk = chunk if chunk.dtype == torch.uint8 else (chunk * 255 + 1e-3).floor().to(torch.uint8)
                    array[row:row + len(chunk)] = chunk.permute(0, 2, 3, 1).cpu().numpy()
                    row += len(chunk)
                if progress is not None:
                    progress(name, severity)
        _atomic_npy(out / f"{name}.npy", (len(severities) * n, h, w, c), fill)
    label_array = labels.cpu().numpy().astype(np.uint8 if labels.max() < 256 else np.int64)
    np.save(out / "labels.npy", np.tile(label_array, len(severities)))
    meta = {"layout": "cifar-c", "severities": list(severities), "seed": seed, "preset": preset,
            "num_images": n, "corruptions": list(names)}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


def read_array_c(directory: str | Path, name: str, severity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One severity block of a released CIFAR-10/100-C (or `damp corrupt`) corruption.

    Returns:
        (images uint8 (N, C, H, W), labels int64 (N,)), memory-mapped reads (the file is not loaded whole).
    """
    directory = Path(directory)
    path, label_path = directory / f"{name}.npy", directory / "labels.npy"
    for p in (path, label_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file")
    meta_path = directory / "meta.json"
    severities = json.loads(meta_path.read_text())["severities"] if meta_path.is_file() else list(SEVERITIES)
    if severity not in severities:
        raise ValueError(f"{path}: severity {severity} not stored (has {severities})")
    try:
        array = np.load(path, mmap_mode="r")
        labels = np.load(label_path, mmap_mode="r")
    except ValueError as err:
        raise DataFormatError(f"{path}: not a .npy array ({err})") from None
    if array.ndim != 4 or array.dtype != np.uint8 or array.shape[-1] not in (1, 3):
        raise DataFormatError(f"{path}: expected uint8 (S*N, H, W, C), got {array.dtype} {array.shape}")
    if len(array) % len(severities) or len(labels) != len(array):
        raise DataFormatError(f"{path}: {len(array)} images and {len(labels)} labels do not form "
                              f"{len(severities)} severity blocks")
    n = len(array) // len(severities)
    k = severities.index(severity)
    block = torch.from_numpy(np.array(array[k * n:(k + 1) * n])).permute(0, 3, 1, 2)  # copy: memmaps are read-only
    return block.contiguous(), torch.from_numpy(np.asarray(labels[k * n:(k + 1) * n], dtype=np.int64))


def write_folder_c(out: str | Path, images: torch.Tensor, labels: torch.Tensor, relative_paths: Sequence[str],
                   classes: Sequence[str], names: Sequence[str], severities: Sequence[int] = SEVERITIES, *,
                   seed: int = 0, device: str = "cpu", preset: str | None = None, frost_dir: str | None = None,
                   progress: Callable[[str, int], None] | None = None) -> None:
    """Write ``<corruption>/<severity>/<class>/<file>`` JPEGs (quality 85, as the reference) for uint8 images.

    ``relative_paths[i]`` is image i's file name inside its class folder.
    """
    from PIL import Image

    out = Path(out)
    for name in names:
        for severity in severities:
            row = 0
            for chunk in corrupted_chunks(images, name, severity, seed=seed, device=device, preset=preset,
                                          frost_dir=frost_dir):
                arrays = chunk.permute(0, 2, 3, 1).cpu().numpy()
                for array, i in zip(arrays, range(row, row + len(chunk))):
                    target = out / name / str(severity) / classes[int(labels[i])] / relative_paths[i]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    im = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
                    tmp = target.with_name(target.name + ".tmp")
                    im.save(tmp, "JPEG", quality=JPEG_QUALITY)
                    os.replace(tmp, target)
                row += len(chunk)
            if progress is not None:
                progress(name, severity)


def read_folder_c(directory: str | Path, name: str, severity: int, classes: Sequence[str] | None = None
                  ) -> tuple[list[tuple[Path, int]], list[str]]:
    """The samples of ``<directory>/<name>/<severity>/<class>/<file>`` (Tiny-ImageNet-C, ImageNet-C)."""
    from damp.data.folders import scan_class_folders

    return scan_class_folders(Path(directory) / name / str(severity), classes)


def released_corruptions(directory: str | Path) -> list[str]:
    """Corruptions present in a -C directory (either layout), in canonical order."""
    directory = Path(directory)
    return [n for n in CANONICAL_NAMES if (directory / f"{n}.npy").is_file() or (directory / n).is_dir()]
