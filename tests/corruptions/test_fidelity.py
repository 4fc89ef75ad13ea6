"""Golden tests: our batched corruptions against independent implementations of the documented
reference algorithms (scipy.ndimage, Pillow, matplotlib's HSV, plain numpy loops).

Tolerance: the issue's target is a mean absolute difference <= 2/255 for the deterministic
corruptions. Where both sides compute the same float operations we assert much tighter bounds.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image
from scipy import ndimage

from damp import corruptions
from damp.corruptions import blur, digital
from tests.corruptions.conftest import smooth_images

SIZES = {"cifar": 32, "tiny": 64, "imagenet": 224}


def ours(x, name, severity, preset):
    return corruptions.corrupt(x, name, severity, preset=preset).double().numpy()


def per_channel(x: torch.Tensor, fn) -> np.ndarray:
    a = x.double().numpy()
    return np.stack([[fn(a[b, c]) for c in range(a.shape[1])] for b in range(a.shape[0])])


@pytest.mark.parametrize("preset", SIZES)
@pytest.mark.parametrize("severity", range(1, 6))
def test_gaussian_blur(preset, severity):
    x = smooth_images(2, SIZES[preset])
    sigma = blur.GAUSSIAN_BLUR[preset][severity - 1]
    ref = np.clip(per_channel(x, lambda im: ndimage.gaussian_filter(im, sigma, mode="nearest", truncate=4.0)), 0, 1)
    assert np.abs(ours(x, "gaussian_blur", severity, preset) - ref).max() < 1e-5


def numpy_disk(radius, alias_blur):
    L = np.arange(-8, 8 + 1) if radius <= 8 else np.arange(-radius, radius + 1)
    ksize = 3 if radius <= 8 else 5
    X, Y = np.meshgrid(L, L)
    disk = np.array((X**2 + Y**2) <= radius**2, dtype=np.float64)
    disk /= disk.sum()
    g = np.exp(-((np.arange(ksize) - (ksize - 1) / 2) ** 2) / (2 * alias_blur**2))
    g /= g.sum()
    disk = ndimage.correlate1d(disk, g, axis=0, mode="mirror")  # cv2.GaussianBlur, BORDER_REFLECT_101
    return ndimage.correlate1d(disk, g, axis=1, mode="mirror")


@pytest.mark.parametrize("preset", SIZES)
@pytest.mark.parametrize("severity", range(1, 6))
def test_defocus_blur(preset, severity):
    x = smooth_images(1, SIZES[preset])
    kernel = numpy_disk(*blur.DEFOCUS_BLUR[preset][severity - 1])
    ref = np.clip(per_channel(x, lambda im: ndimage.correlate(im, kernel, mode="mirror")), 0, 1)
    assert np.abs(ours(x, "defocus_blur", severity, preset) - ref).max() < 1e-5


def numpy_clipped_zoom(img, z):
    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    img = ndimage.zoom(img[top:top + ch, top:top + ch], (z, z), order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim:trim + h, trim:trim + h]


@pytest.mark.parametrize("preset", SIZES)
@pytest.mark.parametrize("severity", range(1, 6))
def test_zoom_blur(preset, severity):
    x = smooth_images(1, SIZES[preset])
    factors = np.arange(*blur.ZOOM_BLUR[preset][severity - 1])

    def ref_fn(im):
        out = im.copy()
        for z in factors:
            out += numpy_clipped_zoom(im, z)
        return np.clip(out / (len(factors) + 1), 0, 1)

    assert np.abs(ours(x, "zoom_blur", severity, preset) - per_channel(x, ref_fn)).max() < 1e-5


def test_zoom_factor_counts_match_the_reference_quirk():
    counts = {p: [len(blur.zoom_factors(c)) for c in blur.ZOOM_BLUR[p]] for p in SIZES}
    assert counts == {"cifar": [7, 12, 16, 21, 26], "tiny": [7, 12, 16, 21, 26], "imagenet": [12, 16, 11, 13, 11]}


@pytest.mark.parametrize("preset", SIZES)
@pytest.mark.parametrize("severity", range(1, 6))
def test_contrast(preset, severity):
    x = smooth_images(2, 32)
    c = digital.CONTRAST[preset][severity - 1]
    a = x.double().numpy()
    means = a.mean(axis=(2, 3), keepdims=True)
    assert np.abs(ours(x, "contrast", severity, preset) - np.clip((a - means) * c + means, 0, 1)).max() < 1e-6


@pytest.mark.parametrize("name", ["brightness", "saturate"])
@pytest.mark.parametrize("preset", SIZES)
@pytest.mark.parametrize("severity", range(1, 6))
def test_hsv_corruptions(name, preset, severity):
    x = smooth_images(2, 32)
    hsv = rgb_to_hsv(x.permute(0, 2, 3, 1).double().numpy())
    if name == "brightness":
        hsv[..., 2] = np.clip(hsv[..., 2] + digital.BRIGHTNESS[preset][severity - 1], 0, 1)
    else:
        c = digital.SATURATE[preset][severity - 1]
        hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    ref = np.clip(hsv_to_rgb(hsv), 0, 1).transpose(0, 3, 1, 2)
    assert np.abs(ours(x, name, severity, preset) - ref).max() < 1e-5


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    arr = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


@pytest.mark.parametrize("preset", SIZES)
@pytest.mark.parametrize("severity", range(1, 6))
def test_pixelate_matches_pillow(preset, severity):
    size = SIZES[preset]
    x = (smooth_images(2, size) * 255).round() / 255
    c = digital.PIXELATE[preset][severity - 1]
    ref = np.stack([np.asarray(im.resize((int(size * c),) * 2, Image.BOX).resize((size, size), Image.BOX))
                    for im in to_pil(x)]).transpose(0, 3, 1, 2) / 255.0
    diff = np.abs(ours(x, "pixelate", severity, preset) - ref)
    # Pillow rounds with 22-bit fixed-point coefficients; exact ties may land one level apart.
    assert diff.mean() < 0.05 / 255 and diff.max() <= 1.01 / 255


@pytest.mark.parametrize("preset", SIZES)
@pytest.mark.parametrize("severity", [1, 5])
def test_jpeg_matches_pillow_exactly(preset, severity):
    x = (smooth_images(2, SIZES[preset]) * 255).round() / 255
    quality = digital.JPEG_COMPRESSION[preset][severity - 1]
    ref = []
    for im in to_pil(x):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        ref.append(np.asarray(Image.open(buf)))
    ref = np.stack(ref).transpose(0, 3, 1, 2) / 255.0
    assert np.abs(ours(x, "jpeg_compression", severity, preset) - ref).max() < 1e-6


def sequential_glass_shuffle(img: np.ndarray, offsets: np.ndarray, d: int) -> np.ndarray:
    """The reference's per-pixel loop with its copy-not-swap behaviour, given the drawn offsets."""
    out = img.copy()
    h, w = img.shape[:2]
    for i, hh in enumerate(range(h - d, d, -1)):
        for j, ww in enumerate(range(w - d, d, -1)):
            dx, dy = offsets[i, j]
            hp, wp = hh + dy, ww + dx
            out[hh, ww], out[hp, wp] = out[hp, wp], out[hh, ww]  # numpy views: a copy, not a swap
    return out


@pytest.mark.parametrize("size,d", [(16, 1), (20, 2), (24, 4)])
def test_glass_shuffle_equals_the_sequential_reference(size, d):
    b = 3
    img = np.random.default_rng(0).random((b, size, size, 3))
    index = blur.glass_shuffle_map(b, size, size, d, torch.Generator().manual_seed(5), torch.device("cpu"))
    n = len(range(size - d, d, -1))
    offsets = torch.randint(-d, d, (b, n, n, 2), generator=torch.Generator().manual_seed(5)).numpy()
    for k in range(b):
        ref = sequential_glass_shuffle(img[k], offsets[k], d)
        ours_k = img[k].reshape(-1, 3)[index[k].numpy()].reshape(size, size, 3)
        assert np.array_equal(ours_k, ref)


def test_motion_kernel_follows_imagemagick():
    k = blur.motion_kernel(6, 1)
    assert k.numel() == 13 and math.isclose(k.sum().item(), 1.0)
    expected = np.exp(-np.arange(13) ** 2 / 2.0)
    assert np.allclose(k.numpy(), expected / expected.sum())
    impulse = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    impulse[0, 0, 4, 4] = 1.0
    right = blur.motion_blur_angles(impulse, 3, 1, torch.tensor([0.0]))[0, 0]
    # Angle 0: tap i reads column x + i, so the impulse spreads to the columns on its left.
    assert right[4, 4] > right[4, 3] > right[4, 2] > 0 and right[4, 5] == 0 and right[3].sum() == 0
    down = blur.motion_blur_angles(impulse, 3, 1, torch.tensor([90.0]))[0, 0]
    assert down[3, 4] > 0 and down[5, 4] == 0 and down[4, 3] == 0


def test_frost_never_uses_the_sixth_texture(tmp_path):
    colors = [(10, 0, 0), (20, 0, 0), (30, 0, 0), (40, 0, 0), (50, 0, 0), (250, 0, 0)]
    for i, color in enumerate(colors, 1):
        Image.new("RGB", (300, 300), color).save(tmp_path / (f"frost{i}.png" if i <= 3 else f"frost{i}.jpg"),
                                                 quality=100)
    x = torch.zeros(400, 3, 32, 32)
    y = corruptions.corrupt(x, "frost", 1, generator=torch.Generator().manual_seed(0), frost_dir=str(tmp_path))
    levels = torch.round(y[:, 0, 0, 0] / 0.2 * 255).unique().tolist()
    assert sorted(levels) == [10, 20, 30, 40, 50]


def test_frost_without_textures_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv("DAMP_FROST_DIR", raising=False)
    monkeypatch.setattr("damp.corruptions.assets._package_frost_dir", lambda: None)
    with pytest.raises(FileNotFoundError, match="DAMP_FROST_DIR"):
        corruptions.corrupt(torch.rand(1, 3, 32, 32), "frost", 1, frost_dir=str(tmp_path))


def test_plasma_fractal_range_and_roughness():
    from damp.corruptions.weather import plasma_fractal
    m = plasma_fractal(4, 32, 3.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert m.shape == (4, 32, 32) and m.amin((1, 2)).eq(0).all() and m.amax((1, 2)).eq(1).all()
    rough = plasma_fractal(4, 32, 1.75, torch.Generator().manual_seed(0), torch.device("cpu"))
    step = lambda t: (t[:, 1:] - t[:, :-1]).abs().mean()  # noqa: E731
    assert step(rough) > step(m)  # a smaller wibble decay keeps more fine detail


def test_spatter_water_and_mud_colours():
    x = torch.full((4, 3, 32, 32), 0.5)
    water = corruptions.corrupt(x, "spatter", 3, generator=torch.Generator().manual_seed(0)) - x
    assert (water >= 0).all() and water[:, 1].sum() > water[:, 0].sum()  # turquoise adds more green than red
    mud = corruptions.corrupt(x, "spatter", 5, generator=torch.Generator().manual_seed(0))
    changed = (mud - x).abs().sum(1) > 1e-6
    assert changed.any() and (mud[:, 0][changed] < 0.5).all()  # brown darkens


def test_canny_finds_a_step_edge_and_distance_transform():
    from damp.corruptions.weather import canny, chamfer_distance, equalize_hist
    img = torch.zeros(1, 1, 16, 16)
    img[..., 8:] = 200.0
    edges = canny(img)[0]
    assert edges[:, 7:9].any(1).all() and edges[:, :6].sum() == 0 and edges[:, 10:].sum() == 0
    zero = torch.zeros(1, 9, 9, dtype=torch.bool)
    zero[0, 4, 4] = True
    d = chamfer_distance(zero, 20.0)[0]
    assert d[4, 4] == 0 and d[4, 5] == 1 and abs(d[5, 5] - 1.4) < 1e-6 and abs(d[5, 6] - 2.1969) < 1e-6
    assert abs(d[4, 8] - 4) < 1e-6
    eq = equalize_hist(torch.tensor([[[0.0, 0, 1, 2]]]))
    assert eq.tolist() == [[[0.0, 0.0, 128.0, 255.0]]]


def per_tap_bilinear(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mode: str) -> torch.Tensor:
    """Reference: order-1 interpolation with each tap's index mapped by the boundary mode (OpenCV/scipy)."""
    from damp.corruptions._common import boundary_index

    b, ch, h, w = x.shape
    r0, c0 = rows.floor(), cols.floor()
    fr, fc = (rows - r0)[:, None], (cols - c0)[:, None]
    r = [boundary_index(r0.long(), h, mode), boundary_index(r0.long() + 1, h, mode)]
    c = [boundary_index(c0.long(), w, mode), boundary_index(c0.long() + 1, w, mode)]
    flat = x.reshape(b, ch, h * w)

    def tap(ri, ci):
        return flat.gather(2, (ri * w + ci).reshape(b, 1, -1).expand(b, ch, -1)).reshape(b, ch, *rows.shape[1:])

    top = tap(r[0], c[0]) * (1 - fc) + tap(r[0], c[1]) * fc
    return top * (1 - fr) + (tap(r[1], c[0]) * (1 - fc) + tap(r[1], c[1]) * fc) * fr


@pytest.mark.parametrize("mode", ["mirror", "reflect"])
def test_grid_sample_reflection_equals_per_tap_boundary_mapping(mode):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 7, generator=g, dtype=torch.float64)
    rows = torch.rand(2, 9, 7, generator=g, dtype=torch.float64) * 14 - 3.5  # well outside the image too
    cols = torch.rand(2, 9, 7, generator=g, dtype=torch.float64) * 12 - 3
    ours = digital.grid_sample_reflect(x, rows, cols, mode)
    torch.testing.assert_close(ours, per_tap_bilinear(x, rows, cols, mode), atol=1e-9, rtol=0)
