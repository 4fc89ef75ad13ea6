"""Corruption throughput: ms per image for each corruption (all 5 severities) at each preset.

Compares with the reference timings measured on this machine class (anchors.md A.9: hendrycks/robustness
code, one core, mean ms per image per severity). Not part of the test suite.

    python benchmarks/corruption_speed.py [--device cpu|cuda] [--presets cifar,tiny,imagenet] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
import torch.nn.functional as F

from damp import __version__, corruptions

# anchors.md A.9: reference ms per image, mean over the 5 severities (multiply by 5 for all severities).
REFERENCE_MS = {
    "gaussian_noise": (0.10, 0.54, 9.10), "shot_noise": (0.25, 1.42, 16.26), "impulse_noise": (0.14, 0.41, 4.37),
    "defocus_blur": (0.24, 0.62, 5.45), "glass_blur": (15.32, 69.21, 1442.79), "motion_blur": (1.52, 4.78, 109.70),
    "zoom_blur": (4.51, 11.53, 98.50), "snow": (2.02, 4.28, 46.91), "frost": (6.44, 6.29, 7.11),
    "fog": (0.63, 0.74, 4.62), "brightness": (0.60, 1.66, 25.34), "contrast": (0.09, 0.21, 2.22),
    "elastic_transform": (1.10, 2.33, 36.23), "pixelate": (0.04, 0.12, 0.56), "jpeg_compression": (0.20, 0.28, 0.57),
    "speckle_noise": (0.11, 0.43, 4.11), "gaussian_blur": (0.17, 0.32, 3.65), "spatter": (0.41, 0.73, 5.25),
    "saturate": (0.54, 1.70, 24.09)}
PRESETS = {"cifar": (32, 1000, 0), "tiny": (64, 250, 1), "imagenet": (224, 16, 2)}


def images(n: int, size: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    coarse = F.interpolate(torch.rand(n, 3, size // 4, size // 4, generator=g), size=(size, size), mode="bilinear")
    return (coarse * 255).to(torch.uint8).to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(preset: str, device: str, batch: int | None, repeats: int) -> dict:
    size, default_batch, column = PRESETS[preset]
    x = images(batch or default_batch, size, device)
    rows = {}
    for name in corruptions.names():
        gen = torch.Generator(device=device).manual_seed(0)
        corruptions.corrupt(x[:8], name, 3, preset=preset, generator=gen)  # warm-up (caches, kernels)
        best = float("inf")
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            for severity in range(1, 6):
                corruptions.corrupt(x, name, severity, preset=preset, generator=gen)
            sync(device)
            best = min(best, time.perf_counter() - start)
        ours = 1000 * best / len(x)
        reference = 5 * REFERENCE_MS[name][column]
        rows[name] = {"ms_per_image_all_severities": ours, "reference_ms": reference, "speedup": reference / ours}
    total = sum(r["ms_per_image_all_severities"] for r in rows.values())
    ref_total = sum(r["reference_ms"] for r in rows.values())
    return {"size": size, "batch": len(x), "corruptions": rows, "total_ms_per_image": total,
            "reference_total_ms_per_image": ref_total, "speedup": ref_total / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--presets", default="cifar,tiny,imagenet")
    parser.add_argument("--batch", type=int, help="images per call (default: 1000 / 250 / 16)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()
    os.environ.setdefault("DAMP_FROST_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                         "assets", "frost"))
    results = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
               "damp": __version__, "cpu": platform.processor() or platform.machine(),
               "cuda": torch.cuda.get_device_name() if args.device.startswith("cuda") else None, "presets": {}}
    for preset in args.presets.split(","):
        r = measure(preset, args.device, args.batch, args.repeats)
        results["presets"][preset] = r
        print(f"\n{preset} ({r['size']} px, batch {r['batch']}, {args.device}): ms per image, all 5 severities")
        print(f"{'corruption':20s} {'damp':>9s} {'reference':>10s} {'speedup':>8s}")
        for name, row in r["corruptions"].items():
            print(f"{name:20s} {row['ms_per_image_all_severities']:9.3f} {row['reference_ms']:10.2f} "
                  f"{row['speedup']:7.1f}x")
        print(f"{'all 19 x 5':20s} {r['total_ms_per_image']:9.3f} {r['reference_total_ms_per_image']:10.1f} "
              f"{r['speedup']:7.1f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
