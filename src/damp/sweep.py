"""`damp sweep`: a grid of runs x seeds, one run directory each, resumable, with the best grid point
of every method selected on the hold-out split (as the paper tunes sigma, rho and p: §4, App. F).

Every run is an ordinary `damp train` run (``train()``), so it can be evaluated and reported alone.
A sweep killed at any point and started again with ``resume=True`` skips the finished runs (those
with a results.json) and resumes the unfinished one from its last checkpoint.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from damp.config import load_config, to_dict
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
              sets: list[str] = (), resume: bool = False, on_run: Callable[[SweepRun, dict], None] | None = None
              ) -> dict:
    """Run (or finish) the sweep and write ``summary.json`` and ``summary.md`` at the top of ``out``.

    Every run's config is built and validated before the first one trains. ``on_run(run, results)``
    is called after each finished run (also for runs a resumed sweep skips).
    """
    out = Path(out)
    spec = {"config": config, "grid": grid, "seeds": seeds, "set": list(sets)}
    _check_out(out, spec, resume)
    runs = plan_runs(grid, seeds)
    configs = {run: load_config(config, [*sets, *run.overrides()]) for run in runs}
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC).write_text(yaml.safe_dump(spec, sort_keys=False))
    results = {}
    for run in runs:
        directory = out / run.name
        done = directory / "results.json"
        if done.is_file():
            results[run] = json.loads(done.read_text())
        else:
            started = directory.is_dir() and any(directory.iterdir())
            results[run] = train(configs[run], directory, resume=started)
        if on_run is not None:
            on_run(run, results[run])
    summary = summarize_sweep(runs, results, configs, grid)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(summary_markdown(summary))
    return summary


def _check_out(out: Path, spec: dict, resume: bool) -> None:
    """A new sweep needs an empty --out; --resume needs the same sweep (its sweep.yaml)."""
    saved = out / SPEC
    if resume and saved.is_file():
        if yaml.safe_load(saved.read_text()) != json.loads(json.dumps(spec)):
            raise ValueError(f"{out}: --resume with a different sweep (config, grid, seeds or --set) than {saved}")
    elif out.exists() and any(out.iterdir()) and not resume:
        raise FileExistsError(f"{out} is not empty; pass --resume to continue the sweep or choose another --out")


def summarize_sweep(runs: list[SweepRun], results: dict, configs: dict, grid: dict) -> dict:
    """Per grid point: mean and std over seeds of the hold-out, clean and corruption errors; per
    method: the point with the lowest mean hold-out error."""
    points: dict = {}
    for run in runs:
        label = run_label(to_dict(configs[run]))
        entry = points.setdefault(run.point, {"point": dict(run.point), "label": label, "runs": []})
        entry["runs"].append({"seed": run.seed, "dir": run.name, **_headline(results[run])})
    rows = [dict(entry, **_spread(entry["runs"])) for entry in points.values()]
    selection = {}
    for row in rows:
        method = configs[next(r for r in runs if dict(r.point) == row["point"])].method.name
        row["method"] = method
        best = selection.get(method)
        if row.get("holdout_error") is not None and (best is None or row["holdout_error"] < best["holdout_error"]):
            selection[method] = {"point": row["point"], "label": row["label"], "holdout_error": row["holdout_error"]}
    return {"grid": grid, "points": rows, "selection": selection,
            "protocol": "best grid point per method by the mean hold-out error (data.holdout) over seeds"}


def _headline(results: dict) -> dict:
    summary = results.get("summary") or {}
    return {"holdout_error": (results.get("holdout") or {}).get("error"),
            "clean_error": (results.get("clean") or {}).get("error"),
            "corruption_error": summary.get("mean_corruption_error")}


def _spread(runs: list[dict]) -> dict:
    out = {}
    for key in ("holdout_error", "clean_error", "corruption_error"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.fmean(values) if values else None
        out[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0 if values else None
    return out


def summary_markdown(summary: dict) -> str:
    """The sweep as a Markdown table, with every grid value and the selection."""
    def cell(row: dict, key: str) -> str:
        return "n/a" if row.get(key) is None else f"{row[key]:.2f} ± {row[key + '_std']:.2f}"

    lines = ["# Sweep", "", "Grid: " + "; ".join(f"`{k}` ∈ {{{', '.join(v)}}}" for k, v in summary["grid"].items()),
             "", f"Selection: {summary['protocol']}.", "",
             "| run | grid values | seeds | hold-out error % | clean error % | mean corruption error % | selected |",
             "|---|---|---|---|---|---|---|"]
    chosen = {tuple(sorted(s["point"].items())) for s in summary["selection"].values()}
    for row in summary["points"]:
        mark = "yes" if tuple(sorted(row["point"].items())) in chosen else ""
        values = ", ".join(f"{k}={v}" for k, v in row["point"].items())
        lines.append(f"| {row['label']} | {values} | {len(row['runs'])} | {cell(row, 'holdout_error')} | "
                     f"{cell(row, 'clean_error')} | {cell(row, 'corruption_error')} | {mark} |")
    return "\n".join(lines) + "\n"
