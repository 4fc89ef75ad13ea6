"""How far one model's step-time ratios move between processes, and after ResNet18 in the same process.

    python benchmarks/fresh_processes.py [--model small_cnn] [--after resnet18] [--processes 4] [--rounds 5]
                                         [--threads 2] [--out FILE.json]

`damp bench` times ResNet18 first and the small models after it, in one process; `kernel_ab.py` and
a training run time a small model in a process of its own. This script runs `damp bench`'s row for
one model (SGD, DAMP and SAM with the executor "auto" picks, and the noise floor) in ``--processes``
pairs of new processes, one after another, alternating which goes first in a pair: in each pair,
one process times the model alone ("fresh") and one times it after one round of the ``--after``
model's row with DAMP alone (SGD, DAMP and the noise-floor step; "after"), a partial imitation of
the bench's history, which also runs the other methods and ResNet-8 first. Each process's row is
printed and written; if the two conditions differ by more than the processes of one condition
differ among themselves, the process's history moves the bench's small-model ratios
(docs/performance.md, "SAM's ascent gradients in the descent buffers, and what moves the small
CNN's ratios").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch

from cpu_timing import parse_and_set_threads, timing_parser, write_figures
from damp import speed

CONDITIONS = ("fresh", "after")


def one_process(model_name: str, rounds: int, after: str | None) -> dict:
    """`damp bench`'s row for DAMP and SAM on ``model_name``, in this process (after a round of ``after``)."""
    cpu = torch.device("cpu")
    if after:
        speed.step_time_ratios(after, 128, cpu, repeats=1,
                               variants={"damp": speed.build_variant("damp", "auto", 8)})
    variants = {name: speed.build_variant(name, "auto", 8) for name in ("damp", "sam")}
    row = speed.step_time_ratios(model_name, 128, cpu, repeats=rounds, variants=variants)
    return {"after": after, "sgd_ms": 1e3 * row["seconds_per_step"]["sgd"],
            "damp_ms": 1e3 * row["seconds_per_step"]["damp"], "noise_floor": row["noise_floor"],
            **{f"{name}_ratio": value for name, value in row["step_time_ratio"].items()}}


def summary(rows: list[dict]) -> dict:
    """min, median and max of every figure over the processes of one condition."""
    return {key: {"min": min(r[key] for r in rows), "median": statistics.median(r[key] for r in rows),
                  "max": max(r[key] for r in rows)} for key in rows[0] if key != "after"}


def main() -> int:
    parser = timing_parser(__doc__.splitlines()[0], rounds=5)
    parser.add_argument("--model", choices=sorted(speed.BENCH_MODELS), default="small_cnn")
    parser.add_argument("--after", choices=sorted(speed.BENCH_MODELS), default="resnet18",
                        help="the model timed first in the 'after' processes")
    parser.add_argument("--processes", type=int, default=4, help="processes per condition")
    parser.add_argument("--child", choices=CONDITIONS, help=argparse.SUPPRESS)  # a timed process's own run
    args = parse_and_set_threads(parser)
    if args.child:
        print(json.dumps(one_process(args.model, args.rounds, args.after if args.child == "after" else None)))
        return 0
    rows: dict[str, list[dict]] = {c: [] for c in CONDITIONS}
    for i in range(args.processes):
        for condition in CONDITIONS if i % 2 == 0 else CONDITIONS[::-1]:  # alternate which goes first
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--after", args.after,
                                  "--rounds", str(args.rounds),
                                  "--threads", str(args.threads), "--child", condition],
                                 check=True, capture_output=True, text=True).stdout
            rows[condition].append(json.loads(out.strip().splitlines()[-1]))
            row = rows[condition][-1]
            print(f"{condition}: SGD {row['sgd_ms']:.1f} ms, floor {row['noise_floor']:.2f}, "
                  f"DAMP {row['damp_ratio']:.2f}, SAM {row['sam_ratio']:.2f}")
    result = {"model": args.model, "after": args.after, "threads": args.threads, "rounds": args.rounds,
              "processes": rows, "summary": {c: summary(r) for c, r in rows.items()}}
    write_figures(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
