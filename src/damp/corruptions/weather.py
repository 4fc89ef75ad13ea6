"""Weather corruptions: snow, frost, fog, spatter.

Constants transcribed from hendrycks/robustness `ImageNet-C/create_c/`: `make_cifar_c.py` (cifar),
`make_tinyimagenet_c.py` (tiny) and `make_imagenet_c.py` (imagenet). x is float (B, 3, H, W) in [0, 1]
(grayscale is handled by the registry, see __init__). Every random draw is per image, batched.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from damp.corruptions._common import boundary_index, clipped_zoom, gaussian_blur2d, luma
from damp.corruptions.assets import frost_textures
from damp.corruptions.blur import motion_blur_angles

# `snow` in the create_c scripts: (loc, scale, zoom, threshold, blur_radius, blur_sigma, blend).
SNOW = {"cifar": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                  (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
        "tiny": ((0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
                 (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)),
        "imagenet": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                     (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))}
# `frost` in the create_c scripts: (image weight, frost weight); texture resize factor per preset.
FROST = {"cifar": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
         "tiny": ((1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)),
         "imagenet": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))}
FROST_RESIZE = {"cifar": 0.2, "tiny": 0.3, "imagenet": 1.0}
# `fog` in the create_c scripts: (strength, wibbledecay); plasma map size per preset (`plasma_fractal`).
FOG = {"cifar": ((.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
       "tiny": ((.4, 3), (.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),
       "imagenet": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4))}
PLASMA_MAPSIZE = {"cifar": 32, "tiny": 64, "imagenet": 256}
# `spatter` in the create_c scripts: (loc, scale, sigma, threshold, c4, mode); mode 0 water, 1 mud.
SPATTER = {"cifar": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                     (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
           "tiny": ((0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0), (0.65, 0.3, 1, 0.69, 0.6, 0),
                    (0.65, 0.1, 0.7, 0.68, 0.6, 1), (0.65, 0.1, 0.5, 0.67, 0.6, 1)),
           "imagenet": ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                        (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1))}
WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise
MUD = (63 / 255, 42 / 255, 20 / 255)


# ---------------------------------------------------------------------------------------------- snow

def snow(x: torch.Tensor, c: tuple, generator: torch.Generator) -> torch.Tensor:
    """Snow layer N(loc, scale) -> clipped_zoom -> threshold -> 8-bit -> ImageMagick motion blur
    (angle U(-135, -45)); the image is greyed towards max(x, 1.5 gray + 0.5) and both the layer and
    its 180-degree rotation are added."""
    loc, scale, zoom, threshold, radius, sigma, blend = c
    b, _, h, w = x.shape
    layer = torch.randn((b, 1, h, w), generator=generator, device=x.device, dtype=x.dtype) * scale + loc
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255  # (np.clip(...) * 255).astype(np.uint8)
    angles = torch.rand(b, generator=generator, device=x.device, dtype=torch.float64) * 90 - 135
    layer = motion_blur_angles(layer, radius, sigma, angles)
    x = blend * x + (1 - blend) * torch.maximum(x, luma(x) * 1.5 + 0.5)
    return (x + layer + layer.flip(-2, -1)).clamp_(0, 1)


# ---------------------------------------------------------------------------------------------- frost

def cv2_linear_resize(texture: torch.Tensor, factor: float) -> torch.Tensor:
    """cv2.resize(img, (0, 0), fx=factor, fy=factor) with INTER_LINEAR (no antialiasing), 8-bit output.
    texture: (3, H, W) float in [0, 1]."""
    if factor == 1.0:
        return texture
    _, h, w = texture.shape

    def taps(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_out = int(round(n_in * factor))
        pos = ((torch.arange(n_out, dtype=torch.float64) + 0.5) / factor - 0.5).clamp(0, n_in - 1)
        i0 = pos.floor()
        return i0.long(), (i0 + 1).clamp(max=n_in - 1).long(), (pos - i0).to(texture.dtype)

    r0, r1, wr = taps(h)
    c0, c1, wc = taps(w)
    rows = texture[:, r0] * (1 - wr)[:, None] + texture[:, r1] * wr[:, None]
    out = rows[:, :, c0] * (1 - wc) + rows[:, :, c1] * wc
    return torch.round(out * 255) / 255


def frost_with(x: torch.Tensor, c: tuple, generator: torch.Generator, preset: str,
               frost_dir: str | None = None) -> torch.Tensor:
    """clip(c0 x + c1 frost) with a random crop of a random texture per image.

    The reference draws the texture with np.random.randint(5) from a 6-name list, so frost6.jpg is
    never used (the create_c scripts' `frost`); we keep that. Textures are resized by 0.2 (cifar) /
    0.3 (tiny).
    """
    b, _, h, w = x.shape
    textures = [cv2_linear_resize(t, FROST_RESIZE[preset]).to(x.device, x.dtype)
                for t in frost_textures(frost_dir)[:5]]
    which = torch.randint(0, 5, (b,), generator=generator, device=x.device)
    u = torch.rand((b, 2), generator=generator, device=x.device, dtype=torch.float64)
    layer = torch.empty_like(x)
    for k, tex in enumerate(textures):  # five textures, not a loop over images
        chosen = (which == k).nonzero().flatten()
        if chosen.numel() == 0:
            continue
        th, tw = tex.shape[-2:]
        if th <= h or tw <= w:
            raise ValueError(f"frost texture {k + 1} ({th}x{tw} after resizing) is too small for {h}x{w} images; "
                             "use a preset for this image size")
        # randint(0, th - h) and randint(0, tw - w): exclusive upper bounds.
        top = (u[chosen, 0] * (th - h)).floor().long()
        left = (u[chosen, 1] * (tw - w)).floor().long()
        rows = top[:, None] + torch.arange(h, device=x.device)
        cols = left[:, None] + torch.arange(w, device=x.device)
        layer[chosen] = tex.permute(1, 2, 0)[rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return (c[0] * x + c[1] * layer).clamp_(0, 1)


# ---------------------------------------------------------------------------------------------- fog

def plasma_fractal(b: int, mapsize: int, wibbledecay: float, generator: torch.Generator,
                   device: torch.device) -> torch.Tensor:
    """The reference's diamond-square heightmap, batched: (B, mapsize, mapsize) float64 in [0, 1].

    New points are neighbour-sum / 4 + wibble * U(-wibble, wibble) (wibble starts at 100 and is
    divided by wibbledecay per level), as in the create_c scripts' `plasma_fractal`.
    """
    m = torch.zeros(b, mapsize, mapsize, dtype=torch.float64, device=device)
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        u = torch.rand(total.shape, generator=generator, device=device, dtype=torch.float64)
        return total / 4 + wibble * (u * 2 * wibble - wibble)

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        m[:, half::step, half::step] = wibbled_mean(squares)
        centres = m[:, half::step, half::step]
        corners = m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled_mean(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        m[:, half::step, 0::step] = wibbled_mean(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step //= 2
        wibble /= wibbledecay
    m -= m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


def fog_with(x: torch.Tensor, c: tuple, generator: torch.Generator, preset: str) -> torch.Tensor:
    """x + strength * plasma, rescaled by max / (max + strength) with the image's max, clipped."""
    b, _, h, w = x.shape
    mapsize = max(PLASMA_MAPSIZE[preset], 2 ** math.ceil(math.log2(max(h, w))))
    plasma = plasma_fractal(b, mapsize, c[1], generator, x.device)[:, None, :h, :w].to(x.dtype)
    max_val = x.amax((1, 2, 3), keepdim=True)
    return ((x + c[0] * plasma) * max_val / (max_val + c[0])).clamp_(0, 1)


# ---------------------------------------------------------------------------------------------- spatter

def _pad(x: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    rows = boundary_index(torch.arange(-k, h + k), h, mode).to(x.device)
    cols = boundary_index(torch.arange(-k, w + k), w, mode).to(x.device)
    return x[..., rows, :][..., cols]


def correlate3x3(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """cv2.filter2D-style 3x3 correlation of (..., H, W) with a given border mode (shifted slices:
    a single-channel conv2d is several times slower on CPU)."""
    h, w = x.shape[-2:]
    padded = _pad(x, 1, mode)
    out = torch.zeros_like(x)
    for (i, j), weight in zip([(i, j) for i in range(3) for j in range(3)], kernel.flatten().tolist()):
        if weight != 0.0:
            out.add_(padded[..., i:i + h, j:j + w], alpha=weight)
    return out


def canny(image: torch.Tensor, low: float = 50, high: float = 150) -> torch.Tensor:
    """OpenCV Canny (aperture 3, L1 gradient) of (B, 1, H, W) 8-bit values 0..255 -> bool edges.

    Sobel with BORDER_REPLICATE; non-maximum suppression along the quantised gradient direction
    with OpenCV's tan(22.5) fixed-point test and its ``m > prev && m >= next`` asymmetry; hysteresis
    grows strong edges (m > high) through 8-connected weak ones (m > low) until nothing changes.
    """
    sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    dx = correlate3x3(image, sobel, "nearest")[:, 0]
    dy = correlate3x3(image, sobel.T, "nearest")[:, 0]
    mag = dx.abs() + dy.abs()
    padded = F.pad(mag, (1, 1, 1, 1))  # magnitude outside the image is 0

    def at(dr: int, dc: int) -> torch.Tensor:
        h, w = mag.shape[-2:]
        return padded[:, 1 + dr:1 + dr + h, 1 + dc:1 + dc + w]

    xs, ys = dx.abs(), dy.abs()
    tg22x = xs * 13573.0  # round(tan(22.5 deg) * 2^15)
    y = ys * 32768.0
    tg67x = tg22x + xs * 65536.0
    s_pos = (dx * dy) >= 0  # OpenCV: s = (dx ^ dy) < 0 ? -1 : 1
    horizontal = (mag > at(0, -1)) & (mag >= at(0, 1))
    vertical = (mag > at(-1, 0)) & (mag >= at(1, 0))
    diagonal = torch.where(s_pos, (mag > at(-1, -1)) & (mag >= at(1, 1)), (mag > at(-1, 1)) & (mag >= at(1, -1)))
    is_max = torch.where(y < tg22x, horizontal, torch.where(y > tg67x, vertical, diagonal))
    candidate = (mag > low) & is_max
    strong = candidate & (mag > high)
    while True:
        grown = candidate & (F.max_pool2d(strong[:, None].float(), 3, 1, 1)[:, 0] > 0)
        if torch.equal(grown, strong):
            return strong
        strong = grown | strong


def chamfer_distance(zero: torch.Tensor, limit: float) -> torch.Tensor:
    """cv2.distanceTransform(DIST_L2, mask 5) distances to the nearest zero pixel, capped at ``limit``.

    The 5x5 chamfer metric (a = 1, b = 1.4, c = 2.1969) is a shortest-path distance; parallel
    relaxation reaches every value <= limit within ceil(limit) steps (each step costs >= 1), so the
    capped result equals OpenCV's two-pass scan. zero: (B, H, W) bool.
    """
    big = 1e6
    d = torch.where(zero, 0.0, big)
    moves = [(0, 1, 1.0), (1, 0, 1.0), (0, -1, 1.0), (-1, 0, 1.0), (1, 1, 1.4), (1, -1, 1.4), (-1, 1, 1.4),
             (-1, -1, 1.4), (1, 2, 2.1969), (2, 1, 2.1969), (-1, 2, 2.1969), (-2, 1, 2.1969), (1, -2, 2.1969),
             (2, -1, 2.1969), (-1, -2, 2.1969), (-2, -1, 2.1969)]
    h, w = zero.shape[-2:]
    for step in range(int(math.ceil(limit)) + 1):
        padded = F.pad(d, (2, 2, 2, 2), value=big)
        best = d.clone()
        for dr, dc, cost in moves:
            torch.minimum(best, padded[:, 2 + dr:2 + dr + h, 2 + dc:2 + dc + w] + cost, out=best)
        if step % 4 == 3 and torch.equal(best, d):  # converged early (dense edges): stop
            break
        d = best
    return d.clamp(max=limit)


def equalize_hist(image: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist of (B, H, W) integer values 0..255 (float tensor) -> same shape."""
    b = image.shape[0]
    flat = image.reshape(b, -1).long()
    hist = torch.zeros(b, 256, device=image.device).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    total = flat.shape[1]
    first = (hist > 0).float().argmax(1, keepdim=True)  # first occupied bin
    first_count = hist.gather(1, first)
    scale = 255.0 / (total - first_count).clamp(min=1)
    cum = hist.cumsum(1) - first_count  # sum over bins (first, i]
    lut = torch.round(cum * scale).clamp(0, 255)  # saturate_cast rounds to nearest
    bins = torch.arange(256, device=image.device)[None]
    lut = torch.where(bins <= first, torch.zeros_like(lut), lut)
    lut = torch.where(first_count == total, first.float().expand_as(lut), lut)  # constant image
    return lut.gather(1, flat).reshape(image.shape)


def box3(x: torch.Tensor) -> torch.Tensor:
    """cv2.blur(x, (3, 3)) with BORDER_REFLECT_101 on (B, 1, H, W)."""
    return correlate3x3(x, torch.full((3, 3), 1 / 9, dtype=torch.float64), "mirror")


def spatter(x: torch.Tensor, c: tuple, generator: torch.Generator) -> torch.Tensor:
    """Liquid layer N(loc, scale) -> skimage gaussian(sigma) -> zero below threshold; then water
    (mode 0: edge-distance shading, pale turquoise, added) or mud (mode 1: brown, blended).

    Water follows the reference's OpenCV chain step by step: 8-bit layer, 255 - Canny(50, 150),
    distanceTransform (L2, mask 5), truncate at 20, 3x3 box blur -> uint8, equalizeHist, filter2D
    with [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]] -> uint8, 3x3 box blur -> uint8, times the layer,
    normalised by its max and scaled by c4. Deviation: the reference's `astype(np.uint8)` of layer
    values above 1 wraps around; we saturate at 255.
    """
    loc, scale, sigma, threshold, c4, mode = c
    b, _, h, w = x.shape
    layer = torch.randn((b, 1, h, w), generator=generator, device=x.device, dtype=x.dtype) * scale + loc
    layer = gaussian_blur2d(layer, sigma, "nearest")
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    if mode == 0:  # 8-bit integer arithmetic below is exact in float32
        layer8 = torch.floor(layer * 255).clamp(0, 255)
        edges = canny(layer8)
        dist = chamfer_distance(edges, 20.0)[:, None]
        dist = torch.floor(box3(dist) + 1e-6).clamp(0, 255)  # .astype(np.uint8) truncates
        dist = equalize_hist(dist[:, 0])[:, None]
        kernel = torch.tensor([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = torch.round(correlate3x3(dist, kernel, "mirror")).clamp(0, 255)  # CV_8U saturate_cast
        dist = torch.round(box3(dist))  # blur of uint8 stays uint8 (rounded)
        m = layer8 * dist
        peak = m.amax((2, 3), keepdim=True)
        m = torch.where(peak > 0, m / peak.clamp(min=1e-12), torch.zeros_like(m)) * c4
        color = torch.tensor(WATER, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x + m.to(x.dtype) * color).clamp_(0, 1)
    m = (layer > threshold).to(x.dtype)
    m = gaussian_blur2d(m, c4, "nearest")
    m = torch.where(m < 0.8, torch.zeros_like(m), m).to(x.dtype)
    color = torch.tensor(MUD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * (1 - m) + color * m).clamp_(0, 1)
