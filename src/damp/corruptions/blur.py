"""Blur corruptions: defocus_blur, glass_blur, motion_blur, zoom_blur, gaussian_blur.

Constants transcribed from hendrycks/robustness `ImageNet-C/create_c/`: `make_cifar_c.py` (cifar),
`make_tinyimagenet_c.py` (tiny) and `make_imagenet_c.py` (imagenet). x is float (B, C, H, W) in [0, 1].
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from damp.corruptions._common import boundary_index, clipped_zoom, clipped_zoom_geometry, filter_matrix, gaussian_blur2d

# `defocus_blur` in the create_c scripts: (radius, alias_blur).
DEFOCUS_BLUR = {"cifar": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
                "tiny": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
                "imagenet": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))}
# `glass_blur` in the create_c scripts: (sigma, max_delta, iterations).
GLASS_BLUR = {"cifar": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
              "tiny": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
              "imagenet": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))}
# `motion_blur` in the create_c scripts: ImageMagick (radius, sigma); angle ~ U(-45, 45) degrees.
MOTION_BLUR = {"cifar": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
               "tiny": ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),
               "imagenet": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))}
# `zoom_blur` in the create_c scripts: np.arange(1, stop, step) zoom factors (z = 1 included: the
# original counts twice).
ZOOM_BLUR = {"cifar": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
             "tiny": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
             "imagenet": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03))}
# `gaussian_blur` in the create_c scripts: skimage gaussian sigma (mode 'nearest', truncate 4).
GAUSSIAN_BLUR = {"cifar": (.4, .6, 0.7, .8, 1),
                 "tiny": (.5, .75, 1, 1.25, 1.5),
                 "imagenet": (1, 2, 3, 4, 6)}


# ---------------------------------------------------------------------------------------------- defocus

@functools.lru_cache(maxsize=64)
def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The reference's `disk`: a binary disk on a 17x17 grid (wider for radius > 8), normalised,
    then cv2.GaussianBlur'd with ksize 3 (5 for radius > 8), sigma alias_blur, BORDER_REFLECT_101."""
    if radius <= 8:
        grid, ksize = torch.arange(-8, 9, dtype=torch.float64), 3
    else:
        grid, ksize = torch.arange(-radius, radius + 1, dtype=torch.float64), 5
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    disk = ((xx**2 + yy**2) <= radius**2).double()
    disk /= disk.sum()
    # cv2.getGaussianKernel(ksize, sigma): exp(-(i - (k-1)/2)^2 / (2 sigma^2)), normalised.
    i = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g = torch.exp(-(i**2) / (2 * alias_blur**2))
    m = filter_matrix(g / g.sum(), disk.shape[0], "mirror")
    kernel = m @ disk @ m.T
    # Small disks on the fixed 17x17 grid are exactly zero outside a few pixels: crop to the support
    # (symmetrically, so the centre stays the anchor). Zero taps contribute nothing to filter2D.
    nonzero = (kernel != 0).nonzero()
    k = kernel.shape[0] // 2
    r = int((nonzero - k).abs().max()) if len(nonzero) else 0
    return kernel[k - r:k + r + 1, k - r:k + r + 1]


@functools.lru_cache(maxsize=64)
def _defocus_operator(radius: float, alias_blur: float, h: int, w: int, device: torch.device, dtype: torch.dtype
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Padding indices and the kernel's spectrum for an FFT correlation of (h, w) images."""
    kernel = disk_kernel(radius, alias_blur)
    k = kernel.shape[-1] // 2
    rows = boundary_index(torch.arange(-k, h + k), h, "mirror").to(device)
    cols = boundary_index(torch.arange(-k, w + k), w, "mirror").to(device)
    size = (h + 2 * k, w + 2 * k)
    # Correlation = convolution with the flipped kernel (the disk is symmetric, but be exact).
    spectrum = torch.fft.rfft2(kernel.flip(0, 1).to(dtype), s=size).to(device)
    return rows, cols, spectrum, size


def defocus_blur(x: torch.Tensor, c: tuple, generator: torch.Generator) -> torch.Tensor:
    """Per-channel cv2.filter2D with the anti-aliased disk kernel (BORDER_REFLECT_101), clipped.

    Computed as an FFT product over the reflect-padded image: the valid part of a circular
    convolution of the padded image equals filter2D's output exactly (up to float rounding).
    """
    b, ch, h, w = x.shape
    rows, cols, spectrum, size = _defocus_operator(float(c[0]), float(c[1]), h, w, x.device, x.dtype)
    k = (size[0] - h) // 2
    padded = x.index_select(-2, rows).index_select(-1, cols)
    if k <= 3:  # at most 7x7 taps: shifted slices beat an FFT
        kernel = disk_kernel(float(c[0]), float(c[1])).tolist()
        out = torch.zeros_like(x)
        for i in range(2 * k + 1):
            for j in range(2 * k + 1):
                if kernel[i][j] != 0.0:
                    out.add_(padded[..., i:i + h, j:j + w], alpha=kernel[i][j])
        return out.clamp_(0, 1)
    full = torch.fft.irfft2(torch.fft.rfft2(padded) * spectrum, s=size)
    return full[..., 2 * k:2 * k + h, 2 * k:2 * k + w].clamp_(0, 1)


# ---------------------------------------------------------------------------------------------- glass

def glass_shuffle_map(b: int, h: int, w: int, max_delta: int, generator: torch.Generator,
                      device: torch.device) -> torch.Tensor:
    """One pass of the reference's "local shuffle", as a source index per output pixel: (B, H*W).

    The reference scans h from H - d down to d + 1 and, within a row, w from W - d down to d + 1;
    at each pixel it draws dx, dy = randint(-d, d) (high exclusive: offsets in [-d, d-1]) and does
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on numpy views, which *copies* (h', w') into (h, w)
    and leaves (h', w') as it was (docs/corruptions.md). A pixel therefore receives the value its source
    has *at that moment*: the source's own received value if the scan already passed it, else its
    original value. Following those links gives every pixel's origin; the chains are resolved
    exactly with pointer doubling (log2(H*W) gathers) instead of a sequential per-pixel loop.
    """
    d = max_delta
    n = h * w
    hs = torch.arange(h - d, d, -1, device=device)  # scan order, as range(H - d, d, -1)
    ws = torch.arange(w - d, d, -1, device=device)
    offsets = torch.randint(-d, d, (b, len(hs), len(ws), 2), generator=generator, device=device)
    dx, dy = offsets[..., 0], offsets[..., 1]  # drawn in the reference's order: dx, dy = randint(..., (2,))
    ph, pw = hs[None, :, None], ws[None, None, :]
    sh, sw = ph + dy, pw + dx  # (B, nh, nw) source coordinates
    rank_p = (h - d - ph) * len(ws) + (w - d - pw)
    in_region = (sh >= d + 1) & (sh <= h - d) & (sw >= d + 1) & (sw <= w - d)
    rank_s = (h - d - sh) * len(ws) + (w - d - sw)
    earlier = in_region & (rank_s < rank_p)  # the source already received its value this pass
    p_flat = (ph * w + pw).expand(b, -1, -1).reshape(b, -1)
    s_flat = (sh * w + sw).reshape(b, -1)
    earlier = earlier.reshape(b, -1)
    identity = torch.arange(n, device=device).expand(b, n)
    parent = identity.clone().scatter_(1, p_flat, torch.where(earlier, s_flat, p_flat))
    leaf = identity.clone().scatter_(1, p_flat, s_flat)  # value source of a chain's terminal pixel
    for _ in range(max(1, math.ceil(math.log2(n))) + 1):
        parent = parent.gather(1, parent)
    return leaf.gather(1, parent)


def glass_blur(x: torch.Tensor, c: tuple, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur, uint8 truncation (reference quirk), `iterations` local shuffles, blur again."""
    sigma, max_delta, iterations = c
    b, ch, h, w = x.shape
    x = gaussian_blur2d(x, sigma, "nearest")
    x = torch.floor(x.clamp(0, 1) * 255 + 1e-3) / 255  # np.uint8(gaussian(...) * 255)
    index = torch.arange(h * w, device=x.device).expand(b, -1)
    for _ in range(iterations):
        index = index.gather(1, glass_shuffle_map(b, h, w, max_delta, generator, x.device))
    x = x.reshape(b, ch, h * w).gather(2, index[:, None, :].expand(b, ch, -1)).reshape(b, ch, h, w)
    return gaussian_blur2d(x, sigma, "nearest").clamp_(0, 1)


# ---------------------------------------------------------------------------------------------- motion

def motion_kernel(radius: float, sigma: float) -> torch.Tensor:
    """ImageMagick MotionBlurImage weights: width 2 ceil(radius) + 1, exp(-i^2 / (2 sigma^2)), i >= 0
    (one-sided: the blur trails in one direction), normalised."""
    width = int(2 * math.ceil(radius) + 1)
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * max(sigma, 1e-12) ** 2))
    return k / k.sum()


# Taps whose weights sum to less than this are skipped: they move no pixel by more than 1e-6
# (far below the 1/255 output quantisation), and with small sigmas most of the kernel is such taps.
NEGLIGIBLE_TAIL = 1e-6


def motion_blur_angles(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur with a per-image angle (degrees), edge virtual pixels. x: (B, C, H, W).

    Tap i reads the pixel at offset (ceil(i cos(a) - 0.5), ceil(i sin(a) - 0.5)) in (column, row),
    as MagickCore/effect.c computes `offset[i]`. Deviation: the reference round-trips the image
    through 8-bit PNG before and after ImageMagick; we keep floats and round the output to 1/255.
    """
    b, ch, h, w = x.shape
    kernel = motion_kernel(radius, sigma)
    tail = kernel.flip(0).cumsum(0).flip(0)  # tail[i] = weight of taps i, i+1, ...
    taps = int((tail >= NEGLIGIBLE_TAIL).sum())
    kernel = (kernel[:taps] / kernel[:taps].sum()).tolist()
    i = torch.arange(taps, device=x.device, dtype=torch.float64)
    theta = torch.deg2rad(angles.to(torch.float64))[:, None]
    ox = torch.ceil(i * torch.cos(theta) - 0.5).long()  # (B, taps): column offsets
    oy = torch.ceil(i * torch.sin(theta) - 0.5).long()  # row offsets
    ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    flat = x.reshape(b, ch, h * w)
    out = torch.zeros_like(flat)
    for t in range(taps):  # a handful of taps, each one gather over the whole batch
        rows = (ar_h[None, :] + oy[:, t, None]).clamp_(0, h - 1)  # (B, H)
        cols = (ar_w[None, :] + ox[:, t, None]).clamp_(0, w - 1)  # (B, W)
        index = (rows[:, :, None] * w + cols[:, None, :]).reshape(b, 1, h * w).expand(b, ch, h * w)
        out.add_(flat.gather(2, index), alpha=kernel[t])
    return torch.round(out.reshape(b, ch, h, w).clamp_(0, 1) * 255) / 255


def motion_blur(x: torch.Tensor, c: tuple, generator: torch.Generator) -> torch.Tensor:
    """Motion blur with radius/sigma c and an angle ~ U(-45, 45) degrees per image."""
    angles = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=torch.float64) * 90 - 45
    return motion_blur_angles(x, c[0], c[1], angles)


# ---------------------------------------------------------------------------------------------- zoom

def zoom_factors(c: tuple) -> np.ndarray:
    """The reference's np.arange(1, stop, step) factors, computed the same way so the float-rounding
    counts match (7/12/16/21/26 for cifar and tiny, 12/16/11/13/11 for imagenet; the create_c
    scripts' `zoom_blur`)."""
    return np.arange(*c)


def zoom_blur(x: torch.Tensor, c: tuple, generator: torch.Generator) -> torch.Tensor:
    """(x + sum over factors z of clipped_zoom(x, z)) / (count + 1), clipped.

    Factors with the same clipped-zoom geometry give the same image (at 32 px every z with
    round(ceil(32 / z) * z) = 32 is the identity), so each distinct geometry is computed once.
    """
    factors = zoom_factors(c)
    n = x.shape[-1]
    counts: dict[tuple, tuple[float, int]] = {}
    for z in factors:
        key = clipped_zoom_geometry(n, float(z))
        counts[key] = (float(z), counts.get(key, (0.0, 0))[1] + 1)
    out = x.clone()
    for z, count in counts.values():
        out.add_(clipped_zoom(x, z), alpha=count)
    return (out / (len(factors) + 1)).clamp_(0, 1)


# ---------------------------------------------------------------------------------------------- gaussian

def gaussian_blur(x: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    """skimage.filters.gaussian(x, sigma=c) per channel (mode 'nearest', truncate 4), clipped."""
    return gaussian_blur2d(x, c, "nearest").clamp_(0, 1)
