"""Digital corruptions: brightness, contrast, saturate, elastic_transform, pixelate, jpeg_compression.

Constants transcribed from hendrycks/robustness `ImageNet-C/create_c/`: `make_cifar_c.py` (cifar),
`make_tinyimagenet_c.py` (tiny) and `make_imagenet_c.py` (imagenet). x is float (B, C, H, W) in [0, 1];
brightness and saturate receive RGB (grayscale is handled by the registry, see __init__).
"""

from __future__ import annotations

import functools
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from damp.corruptions._common import gaussian_blur2d, hsv_to_rgb, rgb_to_hsv

# `brightness` in the create_c scripts: added to V in HSV.
BRIGHTNESS = {"cifar": (.05, .1, .15, .2, .3), "tiny": (.1, .2, .3, .4, .5), "imagenet": (.1, .2, .3, .4, .5)}
# `contrast` in the create_c scripts: (x - mean) * c + mean.
CONTRAST = {"cifar": (.75, .5, .4, .3, 0.15), "tiny": (.4, .3, .2, .1, .05), "imagenet": (.4, .3, .2, .1, .05)}
# `saturate` in the create_c scripts: S * c0 + c1 in HSV.
SATURATE = {"cifar": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
            "tiny": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
            "imagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))}
# `elastic_transform` in the create_c scripts: (alpha, sigma, affine). cifar/tiny are IMSIZE
# multiples (32, 64); imagenet uses multiples of 244, not 224 (reference comment: "244 should have
# been 224, but ultimately nothing is incorrect").
ELASTIC_TRANSFORM = {
    "cifar": tuple((32 * a, 32 * s, 32 * f) for a, s, f in
                   ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))),
    "tiny": tuple((64 * a, 64 * s, 64 * f) for a, s, f in
                  ((0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03), (0.16, 0.03, 0.02))),
    "imagenet": ((244 * 2, 244 * 0.7, 244 * 0.1), (244 * 2, 244 * 0.08, 244 * 0.2),
                 (244 * 0.05, 244 * 0.01, 244 * 0.02), (244 * 0.07, 244 * 0.01, 244 * 0.02),
                 (244 * 0.12, 244 * 0.01, 244 * 0.02)),
}
# `pixelate` in the create_c scripts: PIL BOX resize to int(S * c) and back.
PIXELATE = {"cifar": (0.95, 0.9, 0.85, 0.75, 0.65), "tiny": (0.9, 0.8, 0.7, 0.6, 0.5),
            "imagenet": (0.6, 0.5, 0.4, 0.3, 0.25)}
# `jpeg_compression` in the create_c scripts: PIL JPEG quality.
JPEG_COMPRESSION = {"cifar": (80, 65, 58, 50, 40), "tiny": (65, 58, 50, 40, 25), "imagenet": (25, 18, 15, 10, 7)}


def brightness(x: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    """HSV value V <- clip(V + c) (skimage rgb2hsv/hsv2rgb). x: (B, 3, H, W)."""
    hsv = rgb_to_hsv(x)
    hsv[:, 2] = (hsv[:, 2] + c).clamp(0, 1)
    return hsv_to_rgb(hsv).clamp_(0, 1)


def saturate(x: torch.Tensor, c: tuple, generator: torch.Generator) -> torch.Tensor:
    """HSV saturation S <- clip(S * c0 + c1). x: (B, 3, H, W)."""
    hsv = rgb_to_hsv(x)
    hsv[:, 1] = (hsv[:, 1] * c[0] + c[1]).clamp(0, 1)
    return hsv_to_rgb(hsv).clamp_(0, 1)


def contrast(x: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    """(x - m) * c + m with m the per-channel spatial mean, clipped."""
    means = x.mean((-2, -1), keepdim=True)
    return ((x - means) * c + means).clamp_(0, 1)


# ---------------------------------------------------------------------------------------------- elastic

def grid_sample_reflect(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample (B, C, H, W) images at float (B, H, W) coordinates with order-1 interpolation.

    OpenCV (warpAffine) and scipy (map_coordinates) map each interpolation tap's index by the
    boundary mode. ``F.grid_sample``'s reflection padding instead reflects the continuous coordinate
    about the edge pixel centres (align_corners=True: "mirror", BORDER_REFLECT_101) or about the
    image borders (False: "reflect", half-sample symmetric). For linear interpolation both give the
    same value (tested against a per-tap implementation), and grid_sample is one fused kernel."""
    h, w = x.shape[-2:]
    if mode == "mirror":
        gy, gx = 2 * rows / max(h - 1, 1) - 1, 2 * cols / max(w - 1, 1) - 1
    else:
        gy, gx = (2 * rows + 1) / h - 1, (2 * cols + 1) / w - 1
    grid = torch.stack([gx, gy], -1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=mode == "mirror")


def elastic_transform(x: torch.Tensor, c: tuple, generator: torch.Generator) -> torch.Tensor:
    """Random affine (cv2.warpAffine, BORDER_REFLECT_101) then a smooth random displacement field
    (map_coordinates order 1, mode 'reflect').

    The affine maps three points (centre +- S // 3) to themselves jittered by U(-affine, affine); the
    fields are skimage gaussian(U(-1, 1), sigma, mode 'reflect', truncate 3) * alpha. Deviation:
    cv2.warpAffine quantises the sampling position to 1/32 pixel; we interpolate exactly.
    """
    alpha, sigma, affine = c
    b, ch, h, w = x.shape
    dev, f64 = x.device, torch.float64
    center = torch.tensor([h // 2, w // 2], dtype=f64, device=dev)  # np.float32(shape_size) // 2
    s = min(h, w) // 3
    pts1 = torch.stack([center + s, torch.stack([center[0] + s, center[1] - s]), center - s])  # (3, 2) as (x, y)
    jitter = (torch.rand((b, 3, 2), generator=generator, device=dev, dtype=f64) * 2 - 1) * affine
    pts2 = pts1 + jitter
    # warpAffine samples dst(p) = src(M^-1 p), with M mapping pts1 -> pts2; solve M^-1: pts2 -> pts1.
    ones = torch.ones(b, 3, 1, dtype=f64, device=dev)
    inverse = torch.linalg.solve(torch.cat([pts2, ones], 2), pts1.expand(b, 3, 2))  # (B, 3, 2)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=f64, device=dev), torch.arange(w, dtype=f64, device=dev),
                            indexing="ij")
    grid = torch.stack([xx, yy, torch.ones_like(xx)], -1).reshape(1, -1, 3)  # (1, HW, 3) as (x, y, 1)
    yy, xx = yy.to(x.dtype), xx.to(x.dtype)
    src = (grid @ inverse).reshape(b, h, w, 2).to(x.dtype)
    x = grid_sample_reflect(x, src[..., 1], src[..., 0], "mirror")
    fields = torch.rand((2, b, h, w), generator=generator, device=dev, dtype=x.dtype) * 2 - 1  # dx, then dy
    fields = gaussian_blur2d(fields, sigma, "reflect", truncate=3.0) * alpha
    out = grid_sample_reflect(x, yy + fields[1], xx + fields[0], "reflect")
    return out.clamp_(0, 1)


# ---------------------------------------------------------------------------------------------- pixelate

@functools.lru_cache(maxsize=64)
def box_resample_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out, in) weights of Pillow's BOX resampling along one axis (Resample.c `precompute_coeffs`):
    scale = in / out, support = 0.5 * max(scale, 1), input pixel j weighs box((j - centre + 0.5) / fs)
    with box(t) = 1 on (-0.5, 0.5], normalised per output pixel."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):  # a few dozen rows, once per size: precomputed coefficients, not an image loop
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        for j in range(lo, hi):
            t = (j - center + 0.5) / filterscale
            m[i, j] = 1.0 if -0.5 < t <= 0.5 else 0.0
        total = m[i].sum()
        if total > 0:
            m[i] /= total
    return m


def _round_u8(x: torch.Tensor) -> torch.Tensor:
    """Pillow's 8-bit passes round half up and clip."""
    return torch.floor(x * 255 + 0.5).clamp_(0, 255) / 255


def pil_box_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Pillow ``resize((size, size), BOX)`` of 8-bit images: horizontal pass, round, vertical pass, round."""
    h, w = x.shape[-2:]
    mw = box_resample_matrix(w, size).to(x.device, x.dtype)
    mh = box_resample_matrix(h, size).to(x.device, x.dtype)
    x = _round_u8(x @ mw.T)
    return _round_u8(mh @ x)


def pixelate(x: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    """Pillow BOX down to int(S * c) and back up to S, on 8-bit values (as the reference's PIL image)."""
    h, w = x.shape[-2:]
    small = pil_box_resize(_round_u8(x), int(w * c))
    return pil_box_resize(small, w) if h == w else small  # the reference only sees square images


# ---------------------------------------------------------------------------------------------- jpeg

def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def jpeg_compression(x: torch.Tensor, c: int, generator: torch.Generator) -> torch.Tensor:
    """Pillow JPEG encode at quality c and decode: bit-exact with the reference.

    CPU-bound by design (registry flag): one Pillow call per image, spread over a thread pool
    (Pillow releases the GIL while coding). Grayscale batches are coded as 8-bit "L" JPEGs.
    """
    images = (x.clamp(0, 1) * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if images.shape[-1] == 1:
        images = images[..., 0]
    workers = max(1, min(len(images), torch.get_num_threads()))
    parts = np.array_split(np.arange(len(images)), workers)  # one contiguous slice per thread
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = np.concatenate(list(pool.map(
            lambda idx: np.stack([_jpeg_roundtrip(images[i], int(c)) for i in idx]), parts)))
    out = torch.from_numpy(decoded.reshape(x.shape[0], x.shape[2], x.shape[3], -1)).permute(0, 3, 1, 2)
    return out.to(x.device, x.dtype) / 255
