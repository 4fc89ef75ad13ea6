"""DAMP and SAM step times per executor on CPU, against SGD and the noise floor, in one round-robin.

    python benchmarks/executor_compare.py [--model mlp] [--executors loop,split,fused,auto] [--rounds 9]
                                          [--threads 2] [--out FILE.json]

`damp bench` times each method with the executor "auto" picks; this script times the same steps
with every executor named, so a default can be checked against its alternatives (docs/performance.md,
"Executors without BatchNorm"). Ratios are paired per round, as in `damp bench`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys

import torch

from damp import methods
from damp.models import build_model
from damp.speed import (BENCH_MODELS, HYPERPARAMETERS, SAMPLE_SECONDS, paired_ratios, round_robin_samples,
                        time_steps, train_step)


def compare(model_name: str, executors: list[str], rounds: int, m: int = 8, batch: int = 128) -> dict:
    """Median ms per step and paired ratio to SGD of DAMP and SAM per executor, and of the noise floor."""
    in_channels, size, kwargs = BENCH_MODELS[model_name]
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_channels=in_channels, image_size=size, **kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = torch.rand(batch, in_channels, size, size), torch.randint(0, 10, (batch,))
    candidates = {"sgd": methods.SGD()}
    for executor in executors:
        for method in ("damp", "sam"):
            candidates[f"{method}_{executor}"] = methods.build(method, num_perturbations=m, executor=executor,
                                                               **HYPERPARAMETERS[method])
    steps = {name: (lambda method=method: train_step(model, optimizer, method, x, y, None))
             for name, method in candidates.items()}
    noise_source = methods.build("damp", num_perturbations=m, **HYPERPARAMETERS["damp"])
    selected = [p for _, p in noise_source.select_params(model)]

    def floor_step() -> None:
        steps["sgd"]()
        noise_source.draw(selected, range(m), torch.device("cpu"))
    steps["sgd+noise"] = floor_step
    per_sample = max(1, math.ceil(SAMPLE_SECONDS / time_steps(steps["sgd"], 2, torch.device("cpu"))))
    times = round_robin_samples(steps, torch.device("cpu"), warmup=2, samples=rounds, steps_per_sample=per_sample)
    return {"model": model_name, "batch": batch, "num_perturbations": m, "rounds": rounds,
            "threads": torch.get_num_threads(),
            "ms_per_step": {k: 1e3 * statistics.median(v) for k, v in times.items()},
            "ratio_to_sgd": paired_ratios(times, "sgd")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(BENCH_MODELS), default="mlp")
    parser.add_argument("--executors", default="loop,split,fused,auto")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        result = compare(args.model, [e.strip() for e in args.executors.split(",") if e.strip()], args.rounds)
    except ValueError as err:  # e.g. executor='loop' on a model with BatchNorm
        print(f"executor_compare.py: {err}", file=sys.stderr)
        return 2
    for name, ratio in result["ratio_to_sgd"].items():
        print(f"{name:12s} {result['ms_per_step'][name]:9.2f} ms  {ratio:6.2f} x SGD")
    print(f"{'sgd':12s} {result['ms_per_step']['sgd']:9.2f} ms")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
