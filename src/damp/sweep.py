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
              sets: list[str] = (), resume: bool = False, final_seeds: int = 0,
              on_run: Callable[[SweepRun, dict], None] | None = None, lock: bool = True) -> dict:
    """Run (or finish) the sweep and write ``summary.json`` and ``summary.md`` at the top of ``out``.

    Tuning: every grid point runs with seeds 0..seeds-1. With ``final_seeds`` > ``seeds`` the point
    selected for each method (lowest mean hold-out error) then also runs seeds seeds..final_seeds-1,
    so the reported point has ``final_seeds`` seeds and the others are not trained again.
    Every tuning run's config is built and validated before the first one trains. ``on_run(run,
    results)`` is called after each finished run (also for runs a resumed sweep skips). The sweep
    holds the lock of ``out`` throughout (damp.locks), unless ``lock`` is False.
    """
    out = Path(out)
    with lock_on_main(out) if lock else contextlib.nullcontext():  # lock=False: the caller holds it
        return _run_sweep(config, grid, seeds, out, sets, resume, final_seeds, on_run)


def _run_sweep(config, grid, seeds, out: Path, sets, resume, final_seeds, on_run) -> dict:
    spec = {"config": config, "grid": grid, "seeds": seeds, "set": list(sets), "final_seeds": final_seeds}
    _check_out(out, spec, resume)
    runs = plan_runs(grid, seeds)
    configs = {run: load_config(config, [*sets, *run.overrides()]) for run in runs}
    if final_seeds > seeds and any(cfg.data.holdout == 0 for cfg in configs.values()):
        raise ValueError("--final-seeds selects on the hold-out split: set data.holdout (e.g. --set data.holdout=0.1)")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / SPEC, yaml.safe_dump(spec, sort_keys=False))
    results = {run: _run_once(run, configs[run], out, on_run) for run in runs}
    selection = select_points(summarize_points(runs, results, configs))
    extra = [SweepRun(tuple(chosen["point"].items()), seed)
             for chosen in selection.values() for seed in range(seeds, final_seeds)]
    for run in extra:
        configs[run] = load_config(config, [*sets, *run.overrides()])
        results[run] = _run_once(run, configs[run], out, on_run)
    summary = {"grid": grid, "points": summarize_points(runs + extra, results, configs), "selection": selection,
               "tuning_seeds": seeds,
               "protocol": "best grid point per method by the mean hold-out error (data.holdout) over seeds "
                           f"0..{seeds - 1}" + (f"; the selected point then runs seeds up to {final_seeds - 1}"
                                               if final_seeds > seeds else "")}
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    write_text(out / "summary.md", summary_markdown(summary))
    return summary


def count_runs(config: str | None, grid: dict[str, list[str]], seeds: int, final_seeds: int = 0,
               sets: list[str] = ()) -> int:
    """How many runs :func:`run_sweep` trains: the grid x seeds, plus the final seeds of each method."""
    runs = plan_runs(grid, seeds)
    method_names = {load_config(config, [*sets, *run.overrides()]).method.name for run in runs}
    return len(runs) + max(final_seeds - seeds, 0) * len(method_names)


def _run_once(run: SweepRun, cfg, out: Path, on_run) -> dict:
    """Train one run, or read its results if it finished before (resume of an unfinished one)."""
    directory = out / run.name
    done = directory / "results.json"
    if done.is_file():
        results = json.loads(done.read_text())
    else:
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
            "clean_error": (results.get("clean") or {}).get("error"),
            "corruption_error": summary.get("mean_corruption_error"),
            "train_seconds": (results.get("meta") or {}).get("train_seconds")}


def _spread(runs: list[dict]) -> dict:
    out = {}
    for key in ("holdout_error", "clean_error", "corruption_error", "train_seconds"):
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
