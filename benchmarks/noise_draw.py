"""The CPU noise draw, one row after another against the rows shared over several threads.

    python benchmarks/noise_draw.py [--sizes 1048576,...] [--models mlp,small_cnn,resnet8,resnet18] [--rounds 7]
                                    [--threads 2] [--copies] [--out FILE.json]

DAMP draws an (M, P) buffer per step, row m from its own generator (methods/noise.py,
``fill_normal_``); a CPU ``normal_`` runs on one core. For buffers of M = 8 rows of each ``--sizes``
total elements and of each of damp bench's models' P, timed in one round-robin: the serial draw
(``PARALLEL_DRAW_MIN_ELEMENTS`` out of reach) and the shared one (threshold 0), each alone and right
after an SGD step of the small CNN, as in training. After a step, OpenMP's worker thread spins for
a while on the second core, so a short shared draw gains less there than alone; the sizes where
the gain survives set the threshold (docs/performance.md, "Drawing the noise on every core, and
SAM's ascent without temporaries").

``--copies`` also times, for each model, what a DAMP step does with its noise (the draw, then the
copies w + w * eps built by ``WeightNoise.copies``, one ``addcmul`` per parameter over the whole
(M, P) buffer) against building each row's copies right after drawing that row, while it is in
cache (docs/performance.md, "What building the copies costs on the small models").
"""

from __future__ import annotations

import statistics
import sys

import torch

from cpu_timing import parse_and_set_threads, timing_parser, write_figures
from damp import methods, seeding, speed, timing
from damp.methods import noise

CPU = torch.device("cpu")
M = 8
SERIAL, SHARED = 1 << 62, 0  # thresholds that never / always share the rows


def _draw(buffer: torch.Tensor, threshold: int, before=None):
    def step() -> None:
        if before is not None:
            before()
        noise.PARALLEL_DRAW_MIN_ELEMENTS = threshold
        noise.fill_normal_(buffer, 0.1, [seeding.generator(CPU, 0, seeding.NOISE, 0, m) for m in range(M)])
    return step


def compare(sizes: dict[str, int], rounds: int) -> dict:
    """Per buffer: ms per draw, serial and shared, alone and after an SGD step (minus the step's median)."""
    net, optimizer = speed.bench_model("small_cnn", CPU)
    channels, image, _ = speed.BENCH_MODELS["small_cnn"]
    x, y = speed.training_batch(128, channels, image, CPU), torch.randint(0, 10, (128,))
    sgd_step = lambda: speed.train_step(net, optimizer, methods.SGD(), x, y, None)  # noqa: E731
    default = noise.PARALLEL_DRAW_MIN_ELEMENTS
    steps = {"sgd": sgd_step}
    for label, elements in sizes.items():
        buffer = torch.empty(M, max(1, elements // M))
        for version, threshold in (("serial", SERIAL), ("shared", SHARED)):
            steps[f"{label}@{version}"] = _draw(buffer, threshold)
            steps[f"{label}@{version}+step"] = _draw(buffer, threshold, sgd_step)
    times = timing.round_robin_samples(steps, CPU, warmup=2, samples=rounds, steps_per_sample=3)
    noise.PARALLEL_DRAW_MIN_ELEMENTS = default
    ms = {name: 1e3 * statistics.median(values) for name, values in times.items()}
    result = {"sgd_step_ms": ms["sgd"]}
    for label, elements in sizes.items():
        result[label] = {"elements": M * max(1, elements // M),
                         "alone_ms": {v: ms[f"{label}@{v}"] for v in ("serial", "shared")},
                         "after_step_ms": {v: ms[f"{label}@{v}+step"] - ms["sgd"] for v in ("serial", "shared")}}
    return result


def compare_copies(model_names: list[str], rounds: int) -> dict:
    """Per model: ms for the draw alone, the draw then DAMP's copies, and the copies built row by row."""
    steps, rows = {}, {}
    for name in model_names:
        model, _ = speed.bench_model(name, CPU)
        method = speed.build_variant("damp", "auto", M)  # its noise: seed and step as below
        params = [p.detach() for _, p in method.select_params(model)]
        buffer = torch.empty(M, sum(p.numel() for p in params))

        def by_row(method=method, params=params, buffer=buffer) -> None:
            for m, row in enumerate(buffer.split(1)):
                row.normal_(0.0, method.std, generator=seeding.generator(CPU, method.seed, seeding.NOISE,
                                                                         method.step, m))
                for p, view in zip(params, noise.noise_views(row, params)):
                    torch.addcmul(p, view[0], p, out=view[0])

        def copies(method=method, params=params) -> list:
            return method.copies(params, method.draw(params, range(M), CPU))

        steps |= {f"{name}@draw": lambda method=method, params=params: method.draw(params, range(M), CPU),
                  f"{name}@copies": copies, f"{name}@by_row": by_row}
        by_row()
        same = torch.equal(torch.cat([c.values.flatten(1) for c in copies()], 1), buffer)
        rows[name] = {"elements": buffer.numel(), "same_values": same}
    times = timing.round_robin_samples(steps, CPU, warmup=2, samples=rounds, steps_per_sample=3)
    ms = {key: 1e3 * statistics.median(values) for key, values in times.items()}
    return {name: {**row, **{f"{v}_ms": ms[f"{name}@{v}"] for v in ("draw", "copies", "by_row")}}
            for name, row in rows.items()}


def model_elements(model_name: str) -> int:
    """M x P of a damp bench model: the elements DAMP draws per step."""
    model, _ = speed.bench_model(model_name, CPU)
    return M * sum(p.numel() for _, p in speed.build_variant("damp", "auto", M).select_params(model))


def main() -> int:
    parser = timing_parser(__doc__.splitlines()[0], rounds=7)
    parser.add_argument("--sizes", default="1048576,2097152,4194304,8388608,16777216",
                        help="total elements of the (8, P) buffers, comma-separated")
    parser.add_argument("--models", default="mlp,small_cnn,resnet8,resnet18", help="damp bench's models")
    parser.add_argument("--copies", action="store_true",
                        help="also time the draw then DAMP's copies against building the copies row by row")
    args = parse_and_set_threads(parser)
    sizes = {size: int(size) for size in args.sizes.split(",") if size}
    sizes |= {name: model_elements(name) for name in args.models.split(",") if name}
    result = {"threads": torch.get_num_threads(), "num_perturbations": M, "rounds": args.rounds,
              "threshold": noise.PARALLEL_DRAW_MIN_ELEMENTS, "draws": compare(sizes, args.rounds)}
    for label in sizes:
        row = result["draws"][label]
        alone, after = row["alone_ms"], row["after_step_ms"]
        print(f"{label} ({row['elements']} elements): alone {alone['serial']:.2f} -> {alone['shared']:.2f} ms, "
              f"after a step {after['serial']:.2f} -> {after['shared']:.2f} ms")
    if args.copies:
        models = [name for name in args.models.split(",") if name]
        result["copies"] = compare_copies(models, args.rounds)
        for name, row in result["copies"].items():
            print(f"{name} copies ({row['elements']} elements): draw {row['draw_ms']:.2f} ms, draw then copies "
                  f"{row['copies_ms']:.2f} ms, row by row {row['by_row_ms']:.2f} ms")
    write_figures(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
