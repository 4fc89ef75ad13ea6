"""Shared corruption helpers: input checks, dtype round trips, presets and generators."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from damp.pixels import to_unit_float  # noqa: F401 - re-exported for the corruption modules
from damp.seeding import entropy_seed

PRESETS = ("cifar", "tiny", "imagenet")


def check_bchw(x: torch.Tensor) -> None:
    """Raise a readable ``ValueError`` unless ``x`` is a (B, C, H, W) uint8/float batch with C in {1, 3}."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"expected C = 1 or 3 channels in (B, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
        raise ValueError(f"expected uint8 or floating-point images, got {x.dtype}")


# The five severities of the Hendrycks-Dietterich benchmark: the one place they are written.
SEVERITIES = (1, 2, 3, 4, 5)


def check_severity(severity: int) -> int:
    """Severity must be an integer 1..5."""
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"Invalid severity: {severity!r} (must be an integer 1-5)")
    return severity


def default_preset(height: int, width: int) -> str:
    """The constant table for an image size: <= 32 px cifar, <= 64 px tiny, else imagenet."""
    side = max(height, width)
    return "cifar" if side <= 32 else "tiny" if side <= 64 else "imagenet"


def from_unit_float(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Back to the input dtype. uint8 output is *truncated*, like the reference's ``np.uint8(x * 255)``.

    The 1e-3 guard keeps values that are exact multiples of 1/255 (8-bit results such as pixelate,
    JPEG or motion blur) on their integer instead of one below it after float rounding.
    """
    y = y.clamp(0.0, 1.0)
    if like.dtype == torch.uint8:
        return (y * 255.0 + 1e-3).floor_().clamp_(0, 255).to(torch.uint8)
    return y.to(like.dtype)


def make_generator(device: torch.device, generator: torch.Generator | None) -> torch.Generator:
    """The caller's generator (checked to live on ``device``), or a fresh one seeded from OS entropy.

    Never the global RNG: corruptions are reproducible exactly when the caller passes a generator.
    """
    if generator is None:
        return torch.Generator(device=device).manual_seed(entropy_seed())
    if generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the images are on {device}")
    return generator


# ----------------------------------------------------------------------------------------------
# Separable linear filters as dense (n, n) matrices. A 1-D filter with any scipy/OpenCV boundary
# mode is a fixed linear map of a row, so precomputing it as a matrix reproduces the boundary
# handling exactly (also for kernels wider than the image, which need repeated reflection) and
# turns a 2-D separable filter into two batched matmuls: out = M_h @ x @ M_w^T.
# ----------------------------------------------------------------------------------------------

def boundary_index(i: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map integer positions (possibly outside [0, n)) into the image under a boundary mode.

    Modes, named as in scipy.ndimage: "nearest" (edge replicate; OpenCV BORDER_REPLICATE),
    "reflect" (half-sample symmetric, d c b a | a b c d; skimage/scipy "reflect"), "mirror"
    (whole-sample symmetric, d c b | a b c d; OpenCV BORDER_REFLECT_101 / torch "reflect").
    """
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if n == 1:
        return torch.zeros_like(i)
    if mode == "reflect":
        i = i % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "mirror":
        i = i % (2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"unknown boundary mode {mode!r}")


def filter_matrix(weights: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """(n, n) matrix M with (M @ row)[i] = sum_k weights[k] * row[bnd(i + k - K // 2)] (correlation)."""
    k = weights.numel()
    pos = torch.arange(n)[:, None] + torch.arange(k)[None, :] - k // 2  # (n, K)
    src = boundary_index(pos, n, mode)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.scatter_add_(1, src, weights.to(torch.float64).expand(n, k).contiguous())
    return m


def gaussian_weights(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter1d's kernel: radius int(truncate * sigma + 0.5), normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    if sigma <= 0 or radius == 0:
        return torch.ones(1, dtype=torch.float64)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    phi = torch.exp(-0.5 * x * x / float(sigma) ** 2)
    return phi / phi.sum()


@functools.lru_cache(maxsize=256)
def _gaussian_matrix(sigma: float, truncate: float, n: int, mode: str, device: torch.device,
                     dtype: torch.dtype) -> torch.Tensor:
    return filter_matrix(gaussian_weights(sigma, truncate), n, mode).to(device, dtype)


def separable(x: torch.Tensor, m_rows: torch.Tensor, m_cols: torch.Tensor) -> torch.Tensor:
    """Apply (H, H) and (W, W) matrices to the last two dims: m_rows @ x @ m_cols^T. x: (..., H, W)."""
    return m_rows @ x @ m_cols.transpose(0, 1)


def gaussian_blur2d(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian / scipy gaussian_filter over the last two dims (per channel), exact modes."""
    h, w = x.shape[-2:]
    mh = _gaussian_matrix(float(sigma), truncate, h, mode, x.device, x.dtype)
    mw = mh if w == h else _gaussian_matrix(float(sigma), truncate, w, mode, x.device, x.dtype)
    return separable(x, mh, mw)


# ----------------------------------------------------------------------------------------------
# scipy.ndimage.zoom(order=1) of a centre crop (the reference's clipped_zoom).
# ----------------------------------------------------------------------------------------------

def clipped_zoom_geometry(n: int, zoom: float) -> tuple[int, int, int, int]:
    """(crop size ch, crop offset top, zoomed size out, trim offset) of the reference's clipped_zoom."""
    ch = int(math.ceil(n / zoom))
    out = int(round(ch * zoom))
    return ch, (n - ch) // 2, out, (out - n) // 2


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """The reference's clipped_zoom over the last two dims of a square image. x: (B, C, n, n).

    scipy.ndimage.zoom(order=1) samples input position i * (in - 1) / (out - 1): exactly bilinear
    interpolation with align_corners=True, so the fused upsampling kernel computes it.
    """
    n = x.shape[-1]
    ch, top, out, trim = clipped_zoom_geometry(n, zoom)
    crop = x[..., top:top + ch, top:top + ch]
    if out == ch:
        zoomed = crop
    else:
        zoomed = F.interpolate(crop, size=(out, out), mode="bilinear", align_corners=True)
    return zoomed[..., trim:trim + n, trim:trim + n]


# ----------------------------------------------------------------------------------------------
# Colour: skimage.color.rgb2hsv / hsv2rgb formulas, batched; ITU-R 601 luma.
# ----------------------------------------------------------------------------------------------

LUMA = (0.299, 0.587, 0.114)  # cv2.COLOR_RGB2GRAY and PIL "L" weights


def luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) grey value."""
    return LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV in [0, 1], as skimage.color.rgb2hsv."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = x.amax(1)
    delta = v - x.amin(1)
    safe_v = torch.where(v == 0, torch.ones_like(v), v)
    s = torch.where(delta == 0, torch.zeros_like(v), delta / safe_v)
    safe_d = torch.where(delta == 0, torch.ones_like(delta), delta)
    h = torch.where(b == v, 4.0 + (r - g) / safe_d, torch.zeros_like(v))
    h = torch.where(g == v, 2.0 + (b - r) / safe_d, h)
    h = torch.where(r == v, (g - b) / safe_d, h)
    h = torch.where(delta == 0, torch.zeros_like(h), (h / 6.0) % 1.0)
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) HSV in [0, 1] -> RGB, as skimage.color.hsv2rgb."""
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = hi.long() % 6
    r = torch.stack([v, q, p, p, t, v], 0).gather(0, hi[None]).squeeze(0)
    g = torch.stack([t, v, v, q, p, p], 0).gather(0, hi[None]).squeeze(0)
    b = torch.stack([p, p, t, v, v, q], 0).gather(0, hi[None]).squeeze(0)
    return torch.stack([r, g, b], 1)
