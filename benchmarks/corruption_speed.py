"""Corruption throughput: ms per image for each corruption (all 5 severities) at each preset.

A thin front-end to ``damp.speed.corruption_throughput``, which compares with the reference
timings of the hendrycks/robustness code (one core; ``REFERENCE_MS`` in ``damp.speed``). Not part of
the test suite.

    python benchmarks/corruption_speed.py [--device cpu|cuda] [--presets cifar,tiny,imagenet] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from damp import __version__
from damp.speed import corruption_throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--presets", default="cifar,tiny,imagenet")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()
    shared = Path(__file__).resolve().parents[2] / "shared" / "assets" / "frost"  # the checkout's test assets
    if shared.is_dir():
        os.environ.setdefault("DAMP_FROST_DIR", str(shared))
    results = corruption_throughput(torch.device(args.device), tuple(args.presets.split(",")), repeats=args.repeats)
    for preset, r in results.items():
        print(f"\n{preset} ({r['size']} px, batch {r['batch']}, {args.device}): ms per image, all 5 severities")
        print(f"{'corruption':20s} {'damp':>9s} {'reference':>10s} {'speedup':>8s}")
        for name, row in r["corruptions"].items():
            print(f"{name:20s} {row['ms_per_image']:9.3f} {row['reference_ms_per_image']:10.2f} {row['speedup']:7.1f}x")
        print(f"{'all 19 x 5':20s} {r['total_ms_per_image']:9.3f} {r['reference_total_ms_per_image']:10.1f} "
              f"{r['speedup']:7.1f}x")
        for name, reason in r["unavailable"].items():
            print(f"{name}: unavailable ({reason})")
    if args.out:
        meta = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
                "damp": __version__}
        Path(args.out).write_text(json.dumps({"meta": meta, "presets": results}, indent=2))


if __name__ == "__main__":
    main()
