"""`damp sweep`: a grid of runs x seeds, one run directory each, resumable, with the best grid point
of every method selected on the hold-out split (as the paper tunes sigma, rho and p: §4, App. F).

Every run is an ordinary `damp train` run (``train()``), so it can be evaluated and reported alone.
A sweep killed at any point and started again with ``resume=True`` skips the finished runs (those
with a results.json) and resumes the unfinished one from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from damp.checkpoint import write_text
from damp.config import load_config, to_dict
from damp.locks import has_content, lock_on_main
from damp.report import run_label
from damp.train import train

SPEC = "sweep.yaml"


@dataclass(frozen=True)
class SweepRun:
    """One run of the sweep: a grid point and a seed."""

    point: tuple[tuple[str, str], ...]  # (key, value) per grid axis
    seed: int

    @property
    def name(self) -> str:
        parts = [f"{key.split('.')[-1]}={value}" for key, value in self.point] + [f"seed={self.seed}"]
        return re.sub(r"[^A-Za-z0-9=._-]", "_", "__".join(parts))

    def overrides(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.point] + [f"seed={self.seed}"]


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """``["method.std=0.1,0.2", ...]`` -> {"method.std": ["0.1", "0.2"]}; a one-line ValueError otherwise."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        options = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not options:
            raise ValueError(f"--grid {spec!r}: expected KEY=V1,V2,...")
        if key.strip() in grid:
            raise ValueError(f"--grid: {key.strip()} is given twice")
        grid[key.strip()] = options
    return grid


def plan_runs(grid: dict[str, list[str]], seeds: int) -> list[SweepRun]:
    """Every grid point x seeds 0..seeds-1, in a fixed order."""
    if seeds < 1:
        raise ValueError(f"--seeds: must be >= 1, got {seeds}")
    points = itertools.product(*[[(key, value) for value in values] for key, values in grid.items()])
    return [SweepRun(tuple(point), seed) for point in points for seed in range(seeds)]


def run_sweep(config: str | None, grid: dict[str, list[str]], seeds: int, out: str | Path, *,
              sets: list[str] = (), resume: bool = False, final_seeds: int = 0, fresh_seeds: int = 0,
              extend_edges: int = 0, tune_sets: list[str] = (), budget_minutes: float = 0,
              on_run: Callable[[SweepRun, dict], None] | None = None, lock: bool = True) -> dict:
    """Run (or finish) the sweep and write ``summary.json`` and ``summary.md`` at the top of ``out``.

    Tuning: every grid point runs with seeds 0..seeds-1. With ``final_seeds`` > ``seeds`` the point
    selected for each method (lowest mean hold-out error) then also runs seeds seeds..final_seeds-1,
    so the reported point has ``final_seeds`` seeds and the others are not trained again. With
    ``fresh_seeds`` it runs ``fresh_seeds`` new seeds instead and only those are reported (the
    tuning seeds never are: docs/evidence.md). With ``extend_edges`` a selection at the edge of a
    one-axis numeric grid adds the next value one step further (the ratio of the edge to its
    neighbour), up to ``extend_edges`` times, and the summary says so. ``tune_sets`` are overrides
    for the tuning runs only (e.g. eval.corruptions=none, eval.holdout_corruptions=all: tuning
    numbers from the hold-out split, the test set evaluated for the reported seeds). With
    ``budget_minutes`` no run starts after that many minutes (BudgetReached; resume to go on), so
    one call lasts at most the budget plus one run, and trains at least one. Every tuning run's config is
    built and validated before the first one trains. ``on_run(run, results)`` is called after each
    finished run (also for runs a resumed sweep skips). The sweep holds the lock of ``out``
    throughout (damp.locks), unless ``lock`` is False.
    """
    out = Path(out)
    with lock_on_main(out) if lock else contextlib.nullcontext():  # lock=False: the caller holds it
        spec = {"config": config, "grid": grid, "seeds": seeds, "set": list(sets), "final_seeds": final_seeds,
                "fresh_seeds": fresh_seeds, "extend_edges": extend_edges, "tune_set": list(tune_sets)}
        budget = _Budget(time.monotonic() + 60 * budget_minutes if budget_minutes > 0 else None)
        return _run_sweep(config, dict(grid), spec, out, list(sets), resume, on_run, budget)


def _run_sweep(config, grid: dict[str, list[str]], spec: dict, out: Path, sets: list[str], resume: bool,
               on_run, budget: _Budget) -> dict:
    seeds, final_seeds, fresh_seeds = spec["seeds"], spec["final_seeds"], spec["fresh_seeds"]
    if final_seeds and fresh_seeds:
        raise ValueError("--final-seeds and --fresh-seeds: give one (fresh seeds report only the new seeds)")
    # Options added later are recorded only when used, so an older sweep.yaml still resumes.
    record = {k: v for k, v in spec.items() if v or k not in ("fresh_seeds", "extend_edges", "tune_set")}
    tune = [*sets, *spec["tune_set"]]
    _check_out(out, record, resume)
    runs = plan_runs(grid, seeds)
    configs = {run: load_config(config, [*tune, *run.overrides()]) for run in runs}
    if (final_seeds > seeds or fresh_seeds or spec["extend_edges"]) and \
            any(cfg.data.holdout == 0 for cfg in configs.values()):
        raise ValueError("--final-seeds, --fresh-seeds and --extend-edges select on the hold-out split: set "
                         "data.holdout (e.g. --set data.holdout=0.1)")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / SPEC, yaml.safe_dump(record, sort_keys=False))

    def run_all(todo: list[SweepRun], tuning: bool = True) -> None:
        for run in todo:
            configs.setdefault(run, load_config(config, [*(tune if tuning else sets), *run.overrides()]))
            results[run] = _run_once(run, configs[run], out, on_run, budget)

    results: dict = {}
    run_all(runs)
    selection = select_points(summarize_points(runs, results, configs))
    extensions = []
    for _ in range(spec["extend_edges"]):
        added = _edge_extension(grid, selection)
        if added is None:
            break
        key, value, reason = added
        grid[key] = sorted([*grid[key], value], key=float)
        new = [r for r in plan_runs(grid, seeds) if r not in results]
        run_all(new)
        runs += new
        selection = select_points(summarize_points(runs, results, configs))
        extensions.append({"key": key, "added": value, "because": reason})
    # Extensions spent and the selection still at an edge: the optimum may lie beyond the grid (say so).
    still = _edge_extension(grid, selection) if spec["extend_edges"] else None
    reported = list(range(seeds, seeds + fresh_seeds)) if fresh_seeds else list(range(max(seeds, final_seeds)))
    extra = [SweepRun(tuple(chosen["point"].items()), seed)
             for chosen in selection.values() for seed in reported if seed >= seeds]
    run_all(extra, tuning=False)
    summary = {"grid": grid, "points": summarize_points(runs + extra, results, configs), "selection": selection,
               "tuning_seeds": seeds, "reported_seeds": reported, "extensions": extensions,
               "still_at_edge": None if still is None else still[2],
               "protocol": _protocol_text(seeds, final_seeds, fresh_seeds, reported, extensions, still)}
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    write_text(out / "summary.md", summary_markdown(summary))
    return summary


def _protocol_text(seeds: int, final_seeds: int, fresh_seeds: int, reported: list[int], extensions: list[dict],
                   still: tuple[str, str, str] | None) -> str:
    """The summary's one-sentence account of how the reported point was selected and seeded."""
    protocol = f"best grid point per method by the mean hold-out error (data.holdout) over seeds 0..{seeds - 1}"
    if extensions:
        protocol += "; grid extended at its edge: " + "; ".join(f"{e['key']} += {e['added']} ({e['because']})"
                                                               for e in extensions)
    if still is not None:
        protocol += (f"; still at an edge after {len(extensions)} extension(s), the most --extend-edges allows "
                     f"({still[2]}): the best value may lie beyond the grid")
    if fresh_seeds:
        protocol += f"; the selected point then runs fresh seeds {reported[0]}..{reported[-1]}, the only ones reported"
    elif final_seeds > seeds:
        protocol += f"; the selected point then runs seeds up to {final_seeds - 1}"
    return protocol


def _edge_extension(grid: dict[str, list[str]], selection: dict) -> tuple[str, str, str] | None:
    """(key, new value, why) when a method's selection sits at an edge of a one-axis numeric grid."""
    if len(grid) != 1:
        return None
    (key, values), = grid.items()
    try:
        numbers = sorted(float(v) for v in values)
    except ValueError:
        return None
    if len(numbers) < 2 or numbers[0] <= 0:
        return None
    for method, chosen in selection.items():
        value = float(chosen["point"][key])
        if value == numbers[-1]:
            edge = f"{method} selected {chosen['point'][key]}, the upper edge"
            return key, f"{value * value / numbers[-2]:.6g}", edge
        if value == numbers[0]:
            return key, f"{value * value / numbers[1]:.6g}", f"{method} selected {chosen['point'][key]}, the lower edge"
    return None


def count_runs(config: str | None, grid: dict[str, list[str]], seeds: int, final_seeds: int = 0,
               sets: list[str] = (), fresh_seeds: int = 0) -> int:
    """How many runs :func:`run_sweep` trains: the grid x seeds, plus the final or fresh seeds of each
    method (grid extensions come on top)."""
    runs = plan_runs(grid, seeds)
    method_names = {load_config(config, [*sets, *run.overrides()]).method.name for run in runs}
    return len(runs) + (fresh_seeds or max(final_seeds - seeds, 0)) * len(method_names)


class BudgetReached(Exception):
    """The sweep stopped between runs at its time budget; ``--resume`` continues it."""


@dataclass
class _Budget:
    """No run starts past ``deadline`` (time.monotonic()), but every call trains at least one."""

    deadline: float | None
    trained: int = 0

    def check(self, name: str, out: Path) -> None:
        if self.deadline is not None and self.trained and time.monotonic() >= self.deadline:
            raise BudgetReached(f"stopped at the time budget before {name} ({self.trained} runs trained; {out})")
        self.trained += 1


def _run_once(run: SweepRun, cfg, out: Path, on_run, budget: _Budget | None = None) -> dict:
    """Train one run, or read its results if it finished before (resume of an unfinished one)."""
    directory = out / run.name
    done = directory / "results.json"
    if done.is_file():
        results = json.loads(done.read_text())
    else:
        if budget is not None:
            budget.check(run.name, out)
        started = has_content(directory)
        results = train(cfg, directory, resume=started)
    if on_run is not None:
        on_run(run, results)
    return results


def _check_out(out: Path, spec: dict, resume: bool) -> None:
    """A new sweep needs an empty --out; --resume needs the same sweep (its sweep.yaml)."""
    saved = out / SPEC
    if resume and saved.is_file():
        if yaml.safe_load(saved.read_text()) != json.loads(json.dumps(spec)):
            raise ValueError(f"{out}: --resume with a different sweep (config, grid, seeds or --set) than {saved}")
    elif has_content(out) and not resume:
        raise FileExistsError(f"{out} is not empty; pass --resume to continue the sweep or choose another --out")


def summarize_points(runs: list[SweepRun], results: dict, configs: dict) -> list[dict]:
    """Per grid point: its method and label, and the mean and std over seeds of the hold-out, clean and
    corruption errors."""
    points: dict = {}
    for run in runs:
        cfg = configs[run]
        entry = points.setdefault(run.point, {"point": dict(run.point), "label": run_label(to_dict(cfg)),
                                              "method": cfg.method.name, "runs": []})
        entry["runs"].append({"seed": run.seed, "dir": run.name, **_headline(results[run])})
    return [dict(entry, **_spread(entry["runs"])) for entry in points.values()]


def select_points(rows: list[dict]) -> dict[str, dict]:
    """{method: the row with the lowest mean hold-out error} (rows without a hold-out error are skipped)."""
    selection: dict[str, dict] = {}
    for row in rows:
        best = selection.get(row["method"])
        if row.get("holdout_error") is not None and (best is None or row["holdout_error"] < best["holdout_error"]):
            selection[row["method"]] = {"point": row["point"], "label": row["label"],
                                        "holdout_error": row["holdout_error"]}
    return selection


def _headline(results: dict) -> dict:
    summary = results.get("summary") or {}
    return {"holdout_error": (results.get("holdout") or {}).get("error"),
            "holdout_corruption_error": (results.get("holdout_corruptions") or {}).get("mean_corruption_error"),
            "clean_error": (results.get("clean") or {}).get("error"),
            "corruption_error": summary.get("mean_corruption_error"),
            "train_seconds": (results.get("meta") or {}).get("train_seconds")}


def _spread(runs: list[dict]) -> dict:
    out = {}
    for key in ("holdout_error", "holdout_corruption_error", "clean_error", "corruption_error", "train_seconds"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.fmean(values) if values else None
        out[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0 if values else None
    return out


def summary_markdown(summary: dict) -> str:
    """The sweep as a Markdown table, with every grid value and the selection."""
    def cell(row: dict, key: str) -> str:
        return "n/a" if row.get(key) is None else f"{row[key]:.2f} ± {row[key + '_std']:.2f}"

    axes = "; ".join(f"`{k}` ∈ {{{', '.join(v)}}}" for k, v in summary["grid"].items())
    lines = ["# Sweep", "", "Grid: " + (axes or "none (one point)"),
             "", f"Selection: {summary['protocol']}.", "",
             "| run | grid values | seeds | hold-out error % | clean error % | mean corruption error % "
             "| train time s | selected |", "|---|---|---|---|---|---|---|---|"]
    chosen = {tuple(sorted(s["point"].items())) for s in summary["selection"].values()}
    for row in summary["points"]:
        mark = "yes" if tuple(sorted(row["point"].items())) in chosen else ""
        values = ", ".join(f"{k}={v}" for k, v in row["point"].items())
        lines.append(f"| {row['label']} | {values} | {len(row['runs'])} | {cell(row, 'holdout_error')} | "
                     f"{cell(row, 'clean_error')} | {cell(row, 'corruption_error')} | {cell(row, 'train_seconds')} "
                     f"| {mark} |")
    return "\n".join(lines) + "\n"
