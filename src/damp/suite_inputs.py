"""A suite's run records: which runs a sweep reports, which it tuned on, and which arm each run belongs to.

:mod:`damp.evidence` (RESULTS.md) and :mod:`damp.regimes` (the two regimes side by side) both read a
suite through this module, so a run's arm, its mean corruption error and "follows the protocol" are
each decided in one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from damp import methods
from damp.report import Run, load_run


NOT_STARTED, RUNNING = "not started", "running"


@dataclass
class SuiteInputs:
    """The reported runs (selected points, their reported seeds) and the other grid points of the sweeps."""

    selected: list[Run]
    tuning: list[Run]
    sweeps: dict[str, dict]  # sweep directory -> its summary.json
    # sweep directories left out -> NOT_STARTED (no directory yet) or RUNNING (no summary.json yet)
    unfinished: dict[str, str] = field(default_factory=dict)


def fresh_seeds_only(summary: dict) -> bool:
    """Whether a sweep reports only seeds it did not tune on (the protocol of docs/evidence.md)."""
    reported = summary.get("reported_seeds") or []
    return bool(reported) and min(reported) >= summary.get("tuning_seeds", 0)


def load_inputs(paths: list[str | Path], keep: Callable[[dict], bool] | None = None, *,
                skip_unfinished: bool = False) -> SuiteInputs:
    """Sweep directories (with summary.json) and run directories -> :class:`SuiteInputs`.

    ``keep``, given a sweep's summary, says whether to read that sweep at all (e.g. :func:`fresh_seeds_only`).
    A sweep without summary.json is an error; with ``skip_unfinished`` it is listed in ``unfinished`` as
    RUNNING, and a directory that does not exist yet as NOT_STARTED.
    Raises ValueError when no filter is given and the paths report no run.
    """
    selected, tuning, sweeps, unfinished = [], [], {}, {}
    for path in map(Path, paths):
        if skip_unfinished and not path.exists():
            unfinished[str(path)] = NOT_STARTED
            continue
        if not (path / "sweep.yaml").is_file():
            selected.append(load_run(path))
            continue
        summary_file = path / "summary.json"
        if not summary_file.is_file() and skip_unfinished:
            unfinished[str(path)] = RUNNING
            continue
        if not summary_file.is_file():
            raise FileNotFoundError(f"{path}: the sweep has not finished (no summary.json); run it again with --resume "
                                    "(or report without it: --skip-unfinished)")
        summary = json.loads(summary_file.read_text())
        if keep is not None and not keep(summary):
            continue
        sweeps[str(path)] = summary
        chosen = [c["point"] for c in summary["selection"].values()]
        reported = set(summary.get("reported_seeds") or [r["seed"] for row in summary["points"] for r in row["runs"]])
        for row in summary["points"]:
            for r in row["runs"]:  # a selected point's tuning seeds are not reported (--fresh-seeds)
                report = row["point"] in chosen and r["seed"] in reported
                (selected if report else tuning).append(load_run(path / r["dir"]))
    if not selected and keep is None:
        raise ValueError("no runs to report" + (f" (unfinished sweeps: {', '.join(unfinished)})" if unfinished else ""))
    return SuiteInputs(selected, tuning, sweeps, unfinished)


def finished_sweeps(root: str | Path) -> list[Path]:
    """The sweep directories under ``root`` (one per arm) that have finished: those with a summary.json."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if (p / "sweep.yaml").is_file() and (p / "summary.json").is_file()) \
        if root.is_dir() else []


def method_name(run: Run) -> str:
    """The canonical name of the method a run's config trains with ("sgd" when none is named)."""
    return methods.canonical_name((run.config.get("method") or {}).get("name", "sgd"))


def arm(run: Run) -> str:
    """What a run trains, without its hyperparameter value: sgd, dropout, damp, ..., "sgd + zoom_blur",
    "damp + augmix"."""
    name = (run.config.get("method") or {}).get("name") or run.label.split(" ")[0]
    if methods.canonical_name(name) == "sgd" and ((run.config.get("model") or {}).get("dropout") or 0) > 0:
        name = "dropout"
    data = run.config.get("data") or {}
    extra = data.get("train_corruption") or ("augmix" if data.get("augmix") else None)
    return f"{name} + {extra}" if extra else name


def arms_of(runs: list[Run]) -> dict[str, list[Run]]:
    """{arm name: its runs}, in the order the runs come."""
    arms: dict[str, list[Run]] = {}
    for run in runs:
        arms.setdefault(arm(run), []).append(run)
    return arms


def corruption_error(run: Run) -> float | None:
    """The run's mean corruption error in % (the mean over corruptions and severities), or None if not measured."""
    return (run.results.get("summary") or {}).get("mean_corruption_error")
