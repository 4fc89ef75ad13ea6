"""Per-seed data and paired comparisons of a suite's arms (docs/evidence.md, "Statistics").

Runs of two arms with the same seed share initial weights and data order, so each arm is compared
with the baseline by the per-seed differences: a 95 % t-interval per severity (Holm-adjusted
p-values across the corruption severities) and, for clean error, TOST equivalence within
:data:`EQUIVALENCE_MARGIN`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from damp.checkpoint import write_text
from damp.report import Run, severity_errors
from damp.stats import holm, paired, t_interval, tost
from damp.corruptions import SEVERITIES

# "About equal clean error": the paired clean-error difference lies within +-0.5 pt (TOST, alpha 0.05).
EQUIVALENCE_MARGIN = 0.5
RUNS_CSV_FIELDS = ("arm", "label", "seed", "run", "clean_error", "clean_nll", "holdout_error", "train_error",
                   "mean_corruption_error", *(f"severity_{s}_error" for s in SEVERITIES), "train_seconds")


def run_row(arm_name: str, run: Run) -> dict:
    """One line of runs.csv: every number a paired statistic needs, for one run."""
    results, summary = run.results, run.results.get("summary") or {}
    severities = severity_errors(run)
    row = {"arm": arm_name, "label": run.label, "seed": run.seed, "run": str(run.path),
           "clean_error": results["clean"]["error"], "clean_nll": results["clean"].get("nll"),
           "holdout_error": (results.get("holdout") or {}).get("error"),
           "train_error": (results.get("train") or {}).get("error"),
           "mean_corruption_error": summary.get("mean_corruption_error"),
           "train_seconds": (results.get("meta") or {}).get("train_seconds")}
    row.update({f"severity_{s}_error": severities.get(s) for s in SEVERITIES})
    return row


def write_runs_csv(arms: dict[str, list[Run]], path: str | Path) -> Path:
    """runs.csv: one row per reported run (per seed), so every statistic can be recomputed."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RUNS_CSV_FIELDS)
    writer.writeheader()
    for name, runs in arms.items():
        for run in sorted(runs, key=lambda r: r.seed):
            writer.writerow(run_row(name, run))
    write_text(path, buffer.getvalue())
    return Path(path)


def per_seed(runs: list[Run], severity: int) -> dict[int, float]:
    """{seed: error} at ``severity`` (0: clean; s: the mean over corruptions at s)."""
    return {run.seed: severity_errors(run)[severity] for run in runs if severity in severity_errors(run)}


def interval_cell(d) -> str:
    """A difference as "mean [low, high]"."""
    return f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"


def paired_table(arms: dict[str, list[Run]], baseline: str = "sgd", margin: float = EQUIVALENCE_MARGIN
                 ) -> tuple[str, dict[str, dict]]:
    """Markdown of every arm minus ``baseline``, paired by seed, and the numbers behind it.

    Clean: mean difference [95 % CI] and the TOST verdict within +-``margin`` pt. Severity s: the
    mean corruption error's difference [95 % CI], Holm-adjusted p across the severities present.
    """
    base = arms[baseline]
    severities = sorted(s for s in severity_errors(base[0]) if s > 0)
    header = ["arm", "pairs", "clean Δ [95 % CI]", f"clean within ±{margin:g} pt (TOST)",
              *(f"sev {s} Δ [95 % CI] (Holm p)" for s in severities)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    numbers: dict[str, dict] = {}
    for name, runs in arms.items():
        clean_diffs = paired(per_seed(base, 0), per_seed(runs, 0))
        if name == baseline or len(clean_diffs) < 2:
            continue
        clean = t_interval(clean_diffs)
        equal = tost(clean_diffs, margin)
        per_severity = [t_interval(paired(per_seed(base, s), per_seed(runs, s))) for s in severities]
        adjusted = holm([d.p_value for d in per_severity])
        numbers[name] = {"pairs": clean.n, "clean": clean, "clean_equivalent": equal,
                         "severities": dict(zip(severities, zip(per_severity, adjusted)))}
        verdict = f"yes (90 % CI [{equal.low:+.2f}, {equal.high:+.2f}])" if equal.equivalent else \
            f"not shown (90 % CI [{equal.low:+.2f}, {equal.high:+.2f}])"
        cells = [f"{interval_cell(d)} ({p:.3g})" for d, p in zip(per_severity, adjusted)]
        lines.append("| " + " | ".join([name, str(clean.n), interval_cell(clean), verdict, *cells]) + " |")
    return "\n".join(lines), numbers
