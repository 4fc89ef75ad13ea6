"""Step-time ratios measured in isolation (`damp bench` JSON), set beside a suite's wall-clock.

A suite's arms train one after another, over days, sometimes beside other work and across code
changes, so their wall-clock ratios to SGD compare loosely. docs/evidence.md's cost rule reads the
wall-clock and puts `damp bench`'s ratios alongside; this module reads those ratios for the suite's
own model (the bench row whose model, build arguments, batch and M match the runs' configs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from damp.speed import HYPERPARAMETERS
from damp.suite_inputs import Run, method_name

# The methods `damp bench` times against SGD with the executor "auto" picks (its ghost loop aside).
BENCH_METHODS = tuple(HYPERPARAMETERS)


@dataclass(frozen=True)
class BenchRow:
    """One `damp bench` file's row for a model: its noise floor and its ratios to SGD."""

    source: str  # the file, as named on the command line
    noise_floor: float
    ratios: dict[str, float]


def read_bench_rows(paths: list[str | Path], runs: list[Run]) -> tuple[list[BenchRow], list[str]]:
    """The matching row of every bench file, and a note for each file without one.

    Raises ValueError (naming the file) for a file that is not a `damp bench` JSON.
    """
    cfg = runs[0].config
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    sub_batches = {(r.config.get("method") or {}).get("num_perturbations") for r in runs  # of the benched methods
                   if method_name(r) in BENCH_METHODS}
    rows, missing = [], []
    for path in paths:
        try:
            entries = json.loads(Path(path).read_text())["models"].values()
            match = [e for e in entries if _matches(e, model, data.get("batch_size"), sub_batches)]
            if match:
                ratios = match[0]["step_time_ratio"]
                rows.append(BenchRow(str(path), float(match[0]["noise_floor"]),
                                     {a: float(ratios[a]) for a in BENCH_METHODS if a in ratios}))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"--bench {path}: not a `damp bench` JSON ({type(err).__name__}: {err})") from None
        if not match:
            missing.append(f"{path} has no row for {model.get('name')} with this suite's build arguments, batch "
                           "and M.")
    return rows, missing


def _matches(entry: dict, model: dict, batch: int | None, sub_batches: set) -> bool:
    kwargs = entry.get("model_kwargs") or {}
    return (entry.get("model") == model.get("name") and all(model.get(k) == v for k, v in kwargs.items())
            and entry.get("batch") == batch and sub_batches <= {entry.get("num_perturbations")})


def bench_table(rows: list[BenchRow]) -> str:
    """Markdown: one line per bench file, the noise floor and each method's ratio to SGD."""
    lines = ["| `damp bench` file | noise floor | " + " | ".join(f"{a} / SGD" for a in BENCH_METHODS) + " |",
             "|---|---|" + "---|" * len(BENCH_METHODS)]
    for row in rows:
        cells = [f"{row.ratios[a]:.2f}" if a in row.ratios else "n/a" for a in BENCH_METHODS]
        lines.append(f"| {row.source} | {row.noise_floor:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_range(rows: list[BenchRow], method: str) -> str | None:
    """"1.27" or "1.27-1.35": the method's ratio to SGD over the bench files, or None if none has it."""
    values = sorted(row.ratios[method] for row in rows if method in row.ratios)
    if not values:
        return None
    return f"{values[0]:.2f}" if f"{values[0]:.2f}" == f"{values[-1]:.2f}" else f"{values[0]:.2f}-{values[-1]:.2f}"


def isolated_sentence(rows: list[BenchRow], names: tuple[str, ...] = ("damp", "sam", "asam")) -> str:
    """One sentence with the isolated ratios of ``names``, for a cost paragraph ('' without bench rows)."""
    parts = [f"{a.upper()}/SGD {r}" for a in names if (r := ratio_range(rows, a)) is not None]
    if not parts:
        return ""
    return (f"In isolation (`damp bench`, {len(rows)} run{'s' if len(rows) > 1 else ''}, the table under "
            f"\"Wall-clock per method\"): {', '.join(parts)}.")


def ordering_note(rows: list[BenchRow], wall_clock: dict[str, float], first: str = "damp", second: str = "sam") -> str:
    """A sentence when the isolated ratios order two methods' costs the other way round from the
    wall-clock ({arm: time / SGD}); '' when they agree, or when either source cannot order them."""
    a, b = ([row.ratios[m] for row in rows if m in row.ratios] for m in (first, second))
    if not a or not b or first not in wall_clock or second not in wall_clock:
        return ""
    cheaper = first if max(a) < min(b) else second if max(b) < min(a) else None
    if cheaper is None or (wall_clock[first] < wall_clock[second]) == (cheaper == first):
        return ""
    return (f"The isolated ratios order {first.upper()} and {second.upper()} the other way round "
            f"({cheaper.upper()} the cheaper in every `damp bench` run): the wall-clock ordering comes from when, "
            "beside what and with which code each arm trained (docs/evidence.md).")
