"""DAMP and SAM step times per executor on CPU, against SGD and the noise floor, in one round-robin.

    python benchmarks/executor_compare.py [--model mlp] [--executors loop,split,fused,auto] [--rounds 9]
                                          [--threads 2] [--heap default|retain] [--out FILE.json]

`damp bench` times each method with the executor "auto" picks; this script times the same steps
with every executor named, so a default can be checked against its alternatives (docs/performance.md,
"Earlier runs (contiguous NCHW batches)", paragraph "Executors without BatchNorm"). Ratios are paired
per round, as in `damp bench`. `--heap retain` keeps freed memory in the process
(`timing.retain_freed_heap`), so the steps stop faulting fresh pages in; the minor page faults of
the timing are reported either way.
"""

from __future__ import annotations

import resource
import sys

import torch

from cpu_timing import parse_and_set_threads, timing_parser, write_figures
from damp.speed import BENCH_MODELS, build_variant, step_time_ratios
from damp.timing import retain_freed_heap


def compare(model_name: str, executors: list[str], rounds: int, m: int = 8, batch: int = 128) -> dict:
    """`damp bench`'s step-time row for DAMP and SAM in each executor named, against SGD and the noise floor."""
    variants = {f"{method}_{executor}": build_variant(method, executor, m)
                for executor in executors for method in ("damp", "sam")}
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    row = step_time_ratios(model_name, batch, torch.device("cpu"), m=m, repeats=rounds, variants=variants)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"threads": torch.get_num_threads(), "rounds": rounds, "minor_page_faults": faults, **row}


def main() -> int:
    parser = timing_parser(__doc__.splitlines()[0], rounds=9)
    parser.add_argument("--model", choices=sorted(BENCH_MODELS), default="mlp")
    parser.add_argument("--executors", default="loop,split,fused,auto")
    parser.add_argument("--heap", choices=("default", "retain"), default="default",
                        help="retain: keep freed heap memory in the process (glibc), so steps fault no fresh pages in")
    args = parse_and_set_threads(parser)
    if args.heap == "retain" and not retain_freed_heap():
        print("executor_compare.py: --heap retain needs glibc's mallopt, which this system lacks", file=sys.stderr)
        return 2
    try:
        result = compare(args.model, [e.strip() for e in args.executors.split(",") if e.strip()], args.rounds)
    except ValueError as err:  # e.g. executor='loop' on a model with BatchNorm
        print(f"executor_compare.py: {err}", file=sys.stderr)
        return 2
    result["heap"] = args.heap
    seconds = result["seconds_per_step"]
    print(f"{'sgd':12s} {1e3 * seconds['sgd']:9.2f} ms")
    print(f"{'sgd+noise':12s} {'':12s} {result['noise_floor']:6.2f} x SGD (the floor)")
    for name, ratio in result["step_time_ratio"].items():
        peak = result["peak_memory_mib"][name]
        peak_text = "n/a" if peak is None else f"{peak:.1f} MiB"
        print(f"{name:12s} {1e3 * seconds[name]:9.2f} ms  {ratio:6.2f} x SGD  peak {peak_text}")
    print(f"minor page faults while timing: {result['minor_page_faults']} (heap: {args.heap})")
    write_figures(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
