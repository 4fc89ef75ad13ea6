"""Eager against ``torch.compile`` on CPU: every method's step time and its ratio to SGD in the same mode.

    python benchmarks/cpu_compiled.py [--models small_cnn,resnet8,mlp] [--backend inductor] [--rounds 7]
                                      [--threads 2] [--out FILE.json]

Whether compiling the model takes the per-sub-batch methods' extra cost on CPU down to the noise floor
(docs/performance.md, "Where the small models' extra cost goes, and torch.compile on CPU"). Each of damp
bench's models is compiled once, and every method (SGD, DAMP, DAAP, SAM, ASAM; executor "auto", M = 8,
batch 128 in the trainer's layout) first runs its warm-up steps on it, which compile that method's
graphs; only then are all of them timed, eager and compiled, in one round-robin, so compilation never
falls inside a timed sample. Each compiled ratio is to the compiled SGD step, each eager one to the
eager SGD step. The record also says how many graphs each method compiled while warming up and while
timed (a method that retraced would show there).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from cpu_timing import parse_and_set_threads, ratio_line, timing_parser, write_figures
from damp import speed, timing
from gpu_measure import _dynamo_counts, one_line, recompile_limit

METHODS = ("sgd", "damp", "daap", "sam", "asam")
MODES = ("eager", "compiled")
WARMUP_STEPS = 3
# Every method patches the layers' forwards its own way, so each adds its own graphs (two for SAM and
# ASAM: ascent and descent) to the one compiled model; dynamo's default limit of 8 would run some eagerly.
RECOMPILE_LIMIT = 64


def compare(model_name: str, backend: str, rounds: int) -> dict:
    """ms per step, ratio to the same mode's SGD, and the compile record of each method on one model."""
    cpu = torch.device("cpu")
    net, optimizer = speed.bench_model(model_name, cpu)
    channels, size, _ = speed.BENCH_MODELS[model_name]
    x = speed.training_batch(128, channels, size, cpu)
    y = torch.randint(0, 10, (128,))
    compiled = torch.compile(net, backend=backend)
    steps, compile_record = {}, {}
    for name in METHODS:
        method = speed.build_variant(name, "auto", 8)
        for mode, model in zip(MODES, (net, compiled)):
            steps[f"{name}_{mode}"] = lambda mo=model, me=method: speed.train_step(mo, optimizer, me, x, y, None)
        before, start = _dynamo_counts()["graphs"], time.perf_counter()
        for _ in range(WARMUP_STEPS):
            steps[f"{name}_compiled"]()
        compile_record[name] = {"warmup_s": time.perf_counter() - start,
                                "graphs_while_warming": _dynamo_counts()["graphs"] - before}
    per_sample = max(1, round(speed.SAMPLE_SECONDS / timing.time_steps(steps["sgd_eager"], 2, cpu)))
    before = _dynamo_counts()["graphs"]
    times = timing.round_robin_samples(steps, cpu, warmup=1, samples=rounds, steps_per_sample=per_sample)
    ratios = {}
    for mode in MODES:
        in_mode = {name: times[f"{name}_{mode}"] for name in METHODS}
        ratios[mode] = timing.paired_ratios(in_mode, "sgd")
    return {"ms_per_step": {k: 1e3 * statistics.median(v) for k, v in times.items()},
            "ratio_to_sgd": ratios, "compile": compile_record,
            "graphs_while_timed": _dynamo_counts()["graphs"] - before,
            "rounds": rounds, "steps_per_sample": per_sample}


def main() -> int:
    parser = timing_parser(__doc__.splitlines()[0], rounds=7)
    parser.add_argument("--models", default="small_cnn,resnet8,mlp", help="damp bench's models, comma-separated")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (eager: tracing only)")
    args = parse_and_set_threads(parser)
    result = {"backend": args.backend, "threads": torch.get_num_threads(), "batch": 128, "num_perturbations": 8,
              "torch": torch.__version__}
    with recompile_limit(RECOMPILE_LIMIT):
        for model_name in args.models.split(","):
            try:
                result[model_name] = compare(model_name, args.backend, args.rounds)
            except Exception as err:  # noqa: BLE001 - a compile failure is a result, the other models still run
                result[model_name] = {"error": one_line(err)}
                print(f"{model_name}: {result[model_name]['error']}", file=sys.stderr)
                continue
            ms = result[model_name]["ms_per_step"]
            for mode in MODES:
                ratios = result[model_name]["ratio_to_sgd"][mode]
                print(ratio_line(f"{model_name} {mode}", ms[f"sgd_{mode}"], ratios))
    write_figures(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
