"""Image folders: `<root>/<class>/<file>` scanning and PIL decoding (no torchvision)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from damp.data.idx import DataFormatError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


def scan_class_folders(root: str | Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """Samples ``[(path, class_index)]`` of ``root/<class>/<file>``, classes sorted (ImageFolder order).

    Args:
        classes: fix the class list (and so the indices), e.g. the clean training set's classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found")
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    classes = list(classes) if classes is not None else found
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for name in found:
        if name not in index:
            raise DataFormatError(f"{root / name}: class folder not among the {len(classes)} known classes")
        for path in sorted((root / name).rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                samples.append((path, index[name]))
    if not samples:
        raise DataFormatError(f"{root}: no images found in class sub-folders")
    return samples, classes


def load_rgb(path: Path) -> Image.Image:
    """Decode one image as RGB, or raise DataFormatError naming the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataFormatError(f"{path}: cannot decode image ({err})") from None


def resize_short_side(im: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is ``size`` (bilinear, like torchvision's Resize(int))."""
    w, h = im.size
    if w <= h:
        return im.resize((size, int(round(size * h / w))), Image.BILINEAR)
    return im.resize((int(round(size * w / h)), size), Image.BILINEAR)


def center_crop(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    left, top = int(round((w - size) / 2)), int(round((h - size) / 2))
    return im.crop((left, top, left + size, top + size))


def to_tensor_u8(im: Image.Image) -> torch.Tensor:
    """PIL RGB -> uint8 (3, H, W)."""
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)


def decodable(samples: list[tuple[Path, int]]) -> list[tuple[Path, int]]:
    """The samples whose file Pillow can decode (a full decode of each: opt-in, it reads every file)."""
    ok = []
    for path, label in samples:
        try:
            with Image.open(path) as im:
                im.load()
            ok.append((path, label))
        except (UnidentifiedImageError, OSError, SyntaxError):
            continue
    return ok


def load_folder_images(root: str, size: int):
    """Decode a class-folder tree to uint8 (N, 3, size, size): Resize((64, 64)) for <= 64 px (the
    Tiny-ImageNet-C recipe), else Resize(256) + CenterCrop(224)-style short-side resize and crop.

    Returns (images, labels, paths relative to their class folder, class names).
    """
    samples, classes = scan_class_folders(root)
    tensors = []
    for path, _ in samples:
        im = load_rgb(path)
        if size <= 64:
            im = im.resize((size, size), resample=2)  # bilinear
        else:
            im = center_crop(resize_short_side(im, round(size * 256 / 224)), size)
        tensors.append(to_tensor_u8(im))
    labels = torch.tensor([label for _, label in samples])
    relative = [path.relative_to(Path(root) / classes[label]).as_posix() for path, label in samples]
    return torch.stack(tensors), labels, relative, classes
