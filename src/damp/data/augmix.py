"""AugMix (Hendrycks et al., ICLR 2020), batched on the device with an explicit generator.

Per image: ``width`` chains of ``depth`` operations (depth -1: 1-3 at random per chain), each
operation drawn uniformly from :data:`OPERATIONS` at ``severity``; the chains are mixed with
Dirichlet(1, ..., 1) weights and the result with the image by m ~ Beta(1, 1) (google-research/augmix,
cifar.py ``aug``; both parameters are 1 there). The operations are the official default list
(augmentations.py ``augmentations``): none of them is one of the 19 test corruptions. The official
"all ops" list adds color, contrast, brightness and sharpness, which overlap the test corruptions
(contrast and brightness are two of them), and is not offered.

Operations act on [0, 1] floats with their levels on the 0-255 scale, as PIL's do on uint8 images:
posterize, solarize and equalize quantise to 256 levels; the affine operations sample bilinearly at
the positions PIL's ``Image.transform`` maps each output pixel to (pixel centres, zero fill outside
the image, edge pixels as the neighbours of points inside it).
Deviation: PIL rounds the bilinear result to uint8; here it stays float.

The Jensen-Shannon consistency loss (:func:`jsd_loss`) takes (clean, aug1, aug2) triplets laid out
image by image, so any sub-batch of whole triplets is a valid input (the methods split batches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The official default operation list (google-research/augmix, augmentations.py), in its order.
OPERATIONS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x",
              "translate_y")
JSD_WEIGHT = 12.0  # the official cifar.py's weight of the consistency term
MIXTURE_CLAMP = 1e-7  # the official clamp of the mixture distribution before its log


def _uniform(n: int, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device)


def _level(n: int, severity: float, gen: torch.Generator, device) -> torch.Tensor:
    """sample_level: U(0.1, severity) per image."""
    return 0.1 + (severity - 0.1) * _uniform(n, gen, device)


def _sign(n: int, gen: torch.Generator, device) -> torch.Tensor:
    """-1 or +1 per image (the official ``np.random.uniform() > 0.5``)."""
    return torch.where(_uniform(n, gen, device) > 0.5, -1.0, 1.0)


def _levels_255(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel, stretch the used levels [lo, hi] to [0, 255] (PIL ImageOps.autocontrast,
    cutoff 0: its lookup table truncates ``level * scale + offset``)."""
    levels = _levels_255(x).double()  # float64, as PIL's Python arithmetic: the truncation is exact
    lo = levels.amin(dim=(2, 3), keepdim=True)
    hi = levels.amax(dim=(2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp_min(1)
    stretched = (levels * scale + (-lo * scale)).floor().clamp(0, 255)
    return (torch.where(hi > lo, stretched, levels) / 255).to(x.dtype)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per image and channel, PIL's lookup table (ImageOps.equalize)."""
    b, c, h, w = x.shape
    q = _levels_255(x).long().flatten(2)  # (B, C, HW)
    hist = torch.zeros(b, c, 256, device=x.device, dtype=torch.long).scatter_add_(2, q, torch.ones_like(q))
    last = 255 - (hist.flip(-1) > 0).long().argmax(-1, keepdim=True)  # the last non-empty level
    step = (hist.sum(-1, keepdim=True) - hist.gather(-1, last)) // 255
    before = hist.cumsum(-1) - hist  # pixels below each level
    lut = (step // 2 + before) // step.clamp_min(1)
    out = lut.clamp(0, 255).gather(-1, q).view(b, c, h, w).to(x.dtype) / 255
    return torch.where((step > 0).view(b, c, 1, 1), out, q.view(b, c, h, w).to(x.dtype) / 255)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top ``bits`` (B,) bits of each 8-bit level."""
    drop = (2 ** (8 - bits)).view(-1, 1, 1, 1)
    return torch.div(_levels_255(x), drop, rounding_mode="floor") * drop / 255


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert the levels at or above ``threshold`` (B,) on the 0-255 scale."""
    levels = _levels_255(x)
    return torch.where(levels >= threshold.view(-1, 1, 1, 1), 255 - levels, levels) / 255


def affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """PIL's Image.transform(AFFINE, (a, b, c, d, e, f)) per image: output pixel (x, y) takes the
    input at (a x + b y + c, d x + e y + f) (pixel-centre coordinates), bilinear, zero outside.
    As PIL's bilinear filter: a point outside the image gives 0, and a point inside takes its missing
    neighbours from the edge pixel (not from zero).

    matrix: (B, 6) rows (a, b, c, d, e, f).
    """
    b, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype) + 0.5,
                            torch.arange(w, device=x.device, dtype=x.dtype) + 0.5, indexing="ij")
    a, bb, c, d, e, f = (matrix[:, i].view(b, 1, 1).to(x.dtype) for i in range(6))
    u = a * xs + bb * ys + c
    v = d * xs + e * ys + f
    grid = torch.stack([2 * u / w - 1, 2 * v / h - 1], dim=-1)  # align_corners=False convention
    inside = ((u >= 0) & (u < w) & (v >= 0) & (v < h)).unsqueeze(1).to(x.dtype)
    return inside * F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _rotation(degrees: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """PIL's rotate(degrees) (counter-clockwise about the centre) as affine rows (B, 6)."""
    theta = torch.deg2rad(degrees)
    cos, sin = torch.cos(theta), torch.sin(theta)
    cx, cy = w / 2, h / 2
    return torch.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy], dim=1)


def operation_levels(name: str, n: int, severity: float, gen: torch.Generator, device=None
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The (n,) random levels and signs of one operation for n images (levels drawn first); None where
    the operation takes none."""
    if name in ("autocontrast", "equalize"):
        return None, None
    level = _level(n, severity, gen, device)
    return level, None if name in ("posterize", "solarize") else _sign(n, gen, device)


def transform(name: str, x: torch.Tensor, level: torch.Tensor | None, sign: torch.Tensor | None) -> torch.Tensor:
    """One AugMix operation on every image of x (B, C, H, W), at per-image levels and signs (B,)."""
    n, device, (h, w) = len(x), x.device, x.shape[-2:]
    if name == "autocontrast":
        return autocontrast(x)
    if name == "equalize":
        return equalize(x)
    if name == "posterize":
        return posterize(x, 4 - (level * 4 / 10).floor())
    if name == "solarize":
        return solarize(x, 256 - (level * 256 / 10).floor())
    zeros, ones = torch.zeros(n, device=device), torch.ones(n, device=device)
    if name == "rotate":
        matrix = _rotation(sign * (level * 30 / 10).floor(), h, w)
    elif name in ("shear_x", "shear_y"):
        shear = sign * level * 0.3 / 10
        matrix = torch.stack([ones, shear, zeros, zeros, ones, zeros] if name == "shear_x"
                             else [ones, zeros, zeros, shear, ones, zeros], dim=1)
    elif name in ("translate_x", "translate_y"):
        shift = sign * (level * (w if name == "translate_x" else h) / 3 / 10).floor()
        matrix = torch.stack([ones, zeros, shift, zeros, ones, zeros] if name == "translate_x"
                             else [ones, zeros, zeros, zeros, ones, shift], dim=1)
    else:
        raise ValueError(f"unknown AugMix operation {name!r} (choose from {', '.join(OPERATIONS)})")
    return affine(x, matrix)


def apply_operation(name: str, x: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    """One AugMix operation on every image of x (B, C, H, W), with per-image random levels."""
    if name not in OPERATIONS:
        raise ValueError(f"unknown AugMix operation {name!r} (choose from {', '.join(OPERATIONS)})")
    return transform(name, x, *operation_levels(name, len(x), severity, gen, x.device))


def mixing_weights(n: int, width: int, gen: torch.Generator, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, width) Dirichlet(1, ..., 1) chain weights and (n,) m ~ Beta(1, 1), exactly.

    Dirichlet(1) is normalised Exponential(1) draws; Beta(1, 1) is U(0, 1).
    """
    exponential = -torch.log1p(-torch.rand(n, width, generator=gen, device=device))
    return exponential / exponential.sum(1, keepdim=True), torch.rand(n, generator=gen, device=device)


def augmix(x: torch.Tensor, gen: torch.Generator, *, width: int = 3, depth: int = -1, severity: float = 3.0,
           shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """AugMix of a batch x (B, C, H, W) in [0, 1]; the same shape, dtype and device.

    Every random choice comes from ``gen`` (on x's device); there is no loop over images: each
    (chain, step, operation) applies the operation to the images that drew it. ``shard = (rank,
    world)`` says x is the rank-th of ``world`` equal slices of a global batch: the draws are made for
    the whole global batch (a few numbers per image) and x gets its slice's, so the result does not
    depend on how many processes share the batch.
    """
    if width < 1 or not (depth == -1 or depth >= 1) or not 0 < severity <= 10:
        raise ValueError(f"augmix: width >= 1, depth -1 or >= 1, severity in (0, 10]; got {width}, {depth}, "
                         f"{severity}")
    rank, world = shard
    device, first = x.device, rank * len(x)
    n, mine = world * len(x), slice(first, first + len(x))
    weights, m = (w[mine] for w in mixing_weights(n, width, gen, device))
    mix = torch.zeros_like(x)
    steps = 3 if depth == -1 else depth
    for chain in range(width):
        lengths = torch.randint(1, 4, (n,), generator=gen, device=device) if depth == -1 else \
            torch.full((n,), depth, device=device)
        chosen = torch.randint(len(OPERATIONS), (steps, n), generator=gen, device=device)
        image = x.clone()
        for step in range(steps):
            for index, name in enumerate(OPERATIONS):
                rows = ((chosen[step] == index) & (lengths > step)).nonzero().flatten()
                if not len(rows):
                    continue
                levels = operation_levels(name, len(rows), severity, gen, device)
                if world > 1:  # this process's rows of the global batch (one process: all, no extra sync)
                    local = (rows >= first) & (rows < first + len(x))
                    rows, levels = rows[local] - first, [v if v is None else v[local] for v in levels]
                if len(rows):
                    image[rows] = transform(name, image[rows], *levels).clamp(0, 1)
        mix += weights[:, chain].view(-1, 1, 1, 1).to(x.dtype) * image
    return (1 - m).view(-1, 1, 1, 1).to(x.dtype) * x + m.view(-1, 1, 1, 1).to(x.dtype) * mix


def jsd_triplets(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, **options) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """(clean, augmix, augmix) per image, laid out image by image: (3B, C, H, W) and labels (3B,)."""
    views = torch.stack([x, augmix(x, gen, **options), augmix(x, gen, **options)], dim=1)
    return views.flatten(0, 1), y.repeat_interleave(3)


def jsd_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the clean images plus 12 x the Jensen-Shannon divergence of the triplet.

    logits (3n, K) and targets (3n,) in the :func:`jsd_triplets` layout (official cifar.py).
    """
    grouped = logits.view(-1, 3, logits.shape[-1])
    clean, aug1, aug2 = grouped.unbind(1)
    loss = F.cross_entropy(clean, targets.view(-1, 3)[:, 0])
    p_clean, p_aug1, p_aug2 = (F.softmax(z, dim=1) for z in (clean, aug1, aug2))
    log_mixture = torch.clamp((p_clean + p_aug1 + p_aug2) / 3, MIXTURE_CLAMP, 1).log()
    divergence = sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in (p_clean, p_aug1, p_aug2)) / 3
    return loss + JSD_WEIGHT * divergence


__all__ = ["OPERATIONS", "apply_operation", "augmix", "jsd_loss", "jsd_triplets", "mixing_weights",
           "operation_levels", "transform"]
