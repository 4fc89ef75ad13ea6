"""Does `damp bench` time what `damp train` runs? The trainer's step objects against the bench's, in one round-robin.

    python benchmarks/trainer_vs_bench.py [--config-dir configs/fashion_mnist_resnet8] [--rounds 5]
                                          [--threads 2] [--out FILE.json]

Builds the SGD and DAMP runs of a preset as `damp train` does (model, method, optimizer, the first
training batch) and the same model and method as `damp bench` builds them (`speed.bench_model`,
`speed.build_variant`). Every combination is timed round-robin on that batch with `speed.train_step`,
plus the trainer's own `train.train_step` (which adds the schedule step). If the trainer's objects
cost what the bench's cost, a gap between the bench's ratios and a run's `timing.jsonl` comes from
outside the step: the rest of the loop, or the machine (docs/performance.md).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import torch

from cpu_timing import parse_and_set_threads, timing_parser, write_figures
from damp import methods, speed, timing, train
from damp.config import load_config


def build_runs(config_dir: Path, tmp: Path) -> dict[str, train.Run]:
    """The trainer's SGD and DAMP runs of the preset in ``config_dir``, restored as for a fresh start."""
    runs = {}
    for name in ("sgd", "damp"):
        cfg = load_config(str(config_dir / f"{name}.yaml"))
        run, state = train.prepare(cfg, tmp / name, 0, 1, torch.device("cpu"), False, True)
        train.restore(run, state)
        runs[name] = run
    return runs


def compare(config_dir: Path, rounds: int) -> dict:
    """Median ms per step of each (model, method) pairing, and the ratios to SGD on the same model."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = build_runs(config_dir, Path(tmp))
        damp_run, cfg = runs["damp"], runs["damp"].cfg
        bench_net, bench_optimizer = speed.bench_model(cfg.model.name, torch.device("cpu"),
                                                       num_classes=damp_run.bundle.num_classes)
        bench_damp = speed.build_variant("damp", "auto", cfg.method.num_perturbations)
        x, y = next(iter(damp_run.bundle.train.iter_from(0)))
        sgd = methods.SGD()
        steps = {
            "sgd_trainer_model": lambda: speed.train_step(runs["sgd"].net, runs["sgd"].optimizer, sgd, x, y, None),
            "sgd_bench_model": lambda: speed.train_step(bench_net, bench_optimizer, sgd, x, y, None),
            "damp_trainer_objects": lambda: speed.train_step(damp_run.net, damp_run.optimizer, damp_run.method,
                                                             x, y, None),
            "damp_bench_objects": lambda: speed.train_step(bench_net, bench_optimizer, bench_damp, x, y, None),
            "damp_trainer_step": lambda: train.train_step(damp_run, x, y),
        }
        times = timing.round_robin_samples(steps, torch.device("cpu"), warmup=1, samples=rounds, steps_per_sample=2)
    ms = {name: 1e3 * statistics.median(values) for name, values in times.items()}
    return {"config_dir": str(config_dir), "threads": torch.get_num_threads(), "rounds": rounds,
            "batch": int(x.shape[0]), "ms_per_step": ms,
            "damp_over_sgd_trainer": timing.paired_ratios(
                {"sgd": times["sgd_trainer_model"], "damp": times["damp_trainer_objects"]}, "sgd")["damp"],
            "damp_over_sgd_bench": timing.paired_ratios(
                {"sgd": times["sgd_bench_model"], "damp": times["damp_bench_objects"]}, "sgd")["damp"]}


def main() -> int:
    parser = timing_parser(__doc__.splitlines()[0], rounds=5)
    parser.add_argument("--config-dir", type=Path, default=Path("configs/fashion_mnist_resnet8"))
    args = parse_and_set_threads(parser)
    try:
        result = compare(args.config_dir, args.rounds)
    except (OSError, ValueError) as err:  # a missing preset or dataset, or a model the bench does not build
        print(f"trainer_vs_bench.py: {err}", file=sys.stderr)
        return 2
    for name, value in result["ms_per_step"].items():
        print(f"{name:22s} {value:9.1f} ms")
    print(f"DAMP / SGD: trainer's objects {result['damp_over_sgd_trainer']:.2f}, "
          f"bench's objects {result['damp_over_sgd_bench']:.2f}")
    write_figures(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
