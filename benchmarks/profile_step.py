"""Where a CPU training step goes, per method: operator calls, operator time, and the fixed cost of a step.

    python benchmarks/profile_step.py [--model small_cnn] [--methods sgd,damp,sam] [--steps 20] [--top 12]
                                      [--rounds 15] [--threads 2] [--out FILE.json]

For each method (executor "auto", M = 8) on one of damp bench's models, in the trainer's batch layout:

- ``ms_per_step``: the step without the profiler, at batch 128 and at batch M (one image per
  sub-batch), medians of ``--rounds`` round-robin samples. The batch-M step is mostly the fixed cost
  of a step (Python, dispatch, autograd bookkeeping), which no kernel work can lower.
- ``operator_calls`` and ``operator_ms``: per step at batch 128, from ``torch.profiler`` over
  ``--steps`` steps: every operator event (nested ones included) and the sum of their self times.
- ``top``: the operators with the most self time per step.

docs/performance.md ("Where the small models' extra cost goes") quotes these figures.
"""

from __future__ import annotations

import collections
import statistics
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from cpu_timing import parse_and_set_threads, timing_parser, write_figures
from damp import speed, timing

CPU = torch.device("cpu")


def _batch(model_name: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    channels, image, _ = speed.BENCH_MODELS[model_name]
    return speed.training_batch(size, channels, image, CPU), torch.randint(0, 10, (size,))


def operator_profile(step, steps: int, top: int) -> dict:
    """Operator calls, summed self time (ms) and the ``top`` operators by self time, per step of ``step``."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    calls = collections.Counter(event.name for event in prof.events())
    self_ms = collections.Counter()
    for row in prof.key_averages():
        self_ms[row.key] += row.self_cpu_time_total / 1e3 / steps
    return {"operator_calls": sum(calls.values()) / steps, "operator_ms": sum(self_ms.values()),
            "top": {name: {"self_ms": ms, "calls": calls[name] / steps} for name, ms in self_ms.most_common(top)}}


def profile_methods(model_name: str, names: list[str], steps: int, top: int, rounds: int, m: int = 8) -> dict:
    """Per method: ms per step at batch 128 and at batch M (round-robin), and the operator profile at 128."""
    net, optimizer = speed.bench_model(model_name, CPU)
    batches = {"batch_128": _batch(model_name, 128), f"batch_{m}": _batch(model_name, m)}
    built = {name: speed.build_variant(name, "auto", m) for name in names}
    steps_by_key = {(name, label): (lambda me=method, xy=xy: speed.train_step(net, optimizer, me, *xy, None))
                    for name, method in built.items() for label, xy in batches.items()}
    times = timing.round_robin_samples({f"{n}@{b}": f for (n, b), f in steps_by_key.items()}, CPU, warmup=3,
                                       samples=rounds, steps_per_sample=1)
    result = {}
    for name in names:
        result[name] = {"ms_per_step": {label: 1e3 * statistics.median(times[f"{name}@{label}"])
                                        for label in batches},
                        **operator_profile(steps_by_key[(name, "batch_128")], steps, top)}
    return result


def main() -> int:
    parser = timing_parser(__doc__.splitlines()[0], rounds=15)
    parser.add_argument("--model", default="small_cnn", choices=sorted(speed.BENCH_MODELS))
    parser.add_argument("--methods", default="sgd,damp,sam", help="methods to profile, comma-separated")
    parser.add_argument("--steps", type=int, default=20, help="profiled steps per method")
    parser.add_argument("--top", type=int, default=12, help="operators listed per method")
    args = parse_and_set_threads(parser)
    names = args.methods.split(",")
    result = {"model": args.model, "threads": torch.get_num_threads(), "num_perturbations": 8,
              "steps": args.steps, "rounds": args.rounds,
              "methods": profile_methods(args.model, names, args.steps, args.top, args.rounds)}
    for name, row in result["methods"].items():
        ms = ", ".join(f"{k} {v:.2f} ms" for k, v in row["ms_per_step"].items())
        print(f"{args.model} {name}: {ms}; {row['operator_calls']:.0f} operator calls, "
              f"operators {row['operator_ms']:.1f} ms a step")
    write_figures(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
