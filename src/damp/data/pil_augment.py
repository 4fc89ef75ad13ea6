"""Per-image PIL augmentations for folder datasets: Inception crop and RandAugment (TF Model Garden).

Randomness comes from a ``numpy.random.Generator`` the caller seeds per (seed, epoch, sample), so the
same sample in the same epoch is augmented identically whatever the worker or the resume point.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance, ImageOps


def inception_crop(im: Image.Image, rng: np.random.Generator, size: int, area: tuple[float, float] = (0.08, 1.0),
                   ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10) -> Image.Image:
    """Random area/aspect crop resized to ``size`` (bicubic), with a centre-crop fallback.

    Follows the DAMP ResNet/ViT input pipelines (distorted bounding box: area range, aspect
    (3/4, 4/3), 10 attempts, fallback to the centre crop). Deviation: TF's sampler also enforces
    min_object_covered 0.1 of the (whole-image) box, i.e. area >= 0.1; we use the area range as given.
    """
    w, h = im.size
    for _ in range(attempts):
        target = rng.uniform(*area) * w * h
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return im.resize((size, size), Image.BICUBIC, box=(left, top, left + cw, top + ch))
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))


def center_crop_eval(im: Image.Image, size: int) -> Image.Image:
    """Clean-eval path: centre crop of size/256 of the short side... i.e. 224/256, resized to ``size`` (bicubic)."""
    w, h = im.size
    side = int(round(min(w, h) * 224 / 256))
    left, top = (w - side) // 2, (h - side) // 2
    return im.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))


def hflip(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    return im.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else im


# RandAugment as in the TF Model Garden (`autoaugment.py`): magnitude levels out of _MAX_LEVEL = 10,
# geometric ops fill with grey 128, translate_const 100, cutout_const 40; each of the N layers picks
# an op uniformly and applies it with probability U(0.2, 0.8).
MAX_LEVEL = 10.0
FILL = (128, 128, 128)


def _signed(rng: np.random.Generator, value: float) -> float:
    return -value if rng.random() < 0.5 else value


def _enhance(level: float) -> float:
    return (level / MAX_LEVEL) * 1.8 + 0.1


def _affine(im: Image.Image, coeffs: tuple) -> Image.Image:
    return im.transform(im.size, Image.AFFINE, coeffs, resample=Image.NEAREST, fillcolor=FILL)


def _cutout(im: Image.Image, rng: np.random.Generator, pad: int) -> Image.Image:
    w, h = im.size
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    out = im.copy()
    out.paste(FILL, (max(0, cx - pad), max(0, cy - pad), min(w, cx + pad), min(h, cy + pad)))
    return out


def _solarize_add(im: Image.Image, addition: int, threshold: int = 128) -> Image.Image:
    a = np.asarray(im, dtype=np.int32)
    added = np.clip(a + addition, 0, 255)
    return Image.fromarray(np.where(a < threshold, added, a).astype(np.uint8))


def randaugment_op(im: Image.Image, op: str, level: float, rng: np.random.Generator) -> Image.Image:
    """Apply one RandAugment op at magnitude ``level`` (0-10)."""
    if op == "AutoContrast":
        return ImageOps.autocontrast(im)
    if op == "Equalize":
        return ImageOps.equalize(im)
    if op == "Invert":
        return ImageOps.invert(im)
    if op == "Rotate":
        return im.rotate(_signed(rng, level / MAX_LEVEL * 30.0), resample=Image.NEAREST, fillcolor=FILL)
    if op == "Posterize":
        return ImageOps.posterize(im, max(1, int(level / MAX_LEVEL * 4)))
    if op == "Solarize":
        return ImageOps.solarize(im, int(level / MAX_LEVEL * 256))
    if op == "SolarizeAdd":
        return _solarize_add(im, int(level / MAX_LEVEL * 110))
    if op in ("Color", "Contrast", "Brightness", "Sharpness"):
        enhancer = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
                    "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}[op]
        return enhancer(im).enhance(_enhance(level))
    if op == "ShearX":
        return _affine(im, (1, _signed(rng, level / MAX_LEVEL * 0.3), 0, 0, 1, 0))
    if op == "ShearY":
        return _affine(im, (1, 0, 0, _signed(rng, level / MAX_LEVEL * 0.3), 1, 0))
    if op == "TranslateX":
        return _affine(im, (1, 0, _signed(rng, level / MAX_LEVEL * 100), 0, 1, 0))
    if op == "TranslateY":
        return _affine(im, (1, 0, 0, 0, 1, _signed(rng, level / MAX_LEVEL * 100)))
    if op == "Cutout":
        return _cutout(im, rng, int(level / MAX_LEVEL * 40))
    raise ValueError(f"unknown RandAugment op {op!r}")


RANDAUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
                   "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")


def randaugment(im: Image.Image, rng: np.random.Generator, num_layers: int = 2, magnitude: float = 10.0
                ) -> Image.Image:
    """RandAugment(N=num_layers, M=magnitude) as in TF Model Garden's `distort_image_with_randaugment`."""
    for _ in range(num_layers):
        op = RANDAUGMENT_OPS[int(rng.integers(0, len(RANDAUGMENT_OPS)))]
        if rng.random() < rng.uniform(0.2, 0.8):
            im = randaugment_op(im, op, magnitude, rng)
    return im
