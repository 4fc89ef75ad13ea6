"""Per-seed data and paired comparisons of a suite's arms (docs/evidence.md, "Statistics").

Runs of two arms with the same seed share initial weights and data order, so each arm is compared
with the baseline by the per-seed differences: a 95 % t-interval per severity (Holm-adjusted
p-values across the corruption severities), for clean error TOST equivalence within
:data:`EQUIVALENCE_MARGIN`, and for the mean corruption error a t-interval with no test.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from damp.checkpoint import write_text
from damp.report import Run, severity_errors
from damp.stats import holm, paired, paired_interval, t_interval, tost
from damp.suite_inputs import corruption_error
from damp.corruptions import SEVERITIES
from damp.corruptions import names as corruption_names

# "About equal clean error": the paired clean-error difference lies within +-0.5 pt (TOST, alpha 0.05).
EQUIVALENCE_MARGIN = 0.5
# runs.csv: who the run is, what it was trained with, and every number it measured.
_RESULT_FIELDS = ("clean_error", "clean_nll", "clean_ece", "holdout_error", "holdout_nll", "train_error",
                  "mean_corruption_error", *(f"severity_{s}_error" for s in SEVERITIES), "fgsm", "train_seconds")
RUNS_CSV_FIELDS = ("arm", "label", "seed", "run", "method", "hyperparameters", *_RESULT_FIELDS,
                   *(f"{name}_{s}_error" for name in corruption_names() for s in SEVERITIES))


def _hyperparameters(config: dict) -> str:
    """The run's method, model and data settings as compact JSON (the whole config.yaml is beside it)."""
    keep = {section: config.get(section) for section in ("method", "model", "data", "optim", "trainer")
            if config.get(section)}
    return json.dumps(keep, sort_keys=True, separators=(",", ":"), default=str)


def run_row(arm_name: str, run: Run) -> dict:
    """One line of runs.csv: every number of the run's results.json, flattened, for one run."""
    results = run.results
    clean, holdout, train = (results.get(key) or {} for key in ("clean", "holdout", "train"))
    severities = severity_errors(run)
    row = {"arm": arm_name, "label": run.label, "seed": run.seed, "run": str(run.path),
           "method": (run.config.get("method") or {}).get("name") or (results.get("meta") or {}).get("method"),
           "hyperparameters": _hyperparameters(run.config),
           "clean_error": clean["error"], "clean_nll": clean.get("nll"), "clean_ece": clean.get("ece"),
           "holdout_error": holdout.get("error"), "holdout_nll": holdout.get("nll"),
           "train_error": train.get("error"),
           "mean_corruption_error": corruption_error(run),
           "fgsm": json.dumps(results["fgsm"], sort_keys=True) if results.get("fgsm") else None,
           "train_seconds": (results.get("meta") or {}).get("train_seconds")}
    row.update({f"severity_{s}_error": severities.get(s) for s in SEVERITIES})
    for name, per_severity in (results.get("corruptions") or {}).items():
        row.update({f"{name}_{s}_error": (per_severity.get(str(s)) or {}).get("error") for s in SEVERITIES})
    return row


def write_runs_csv(arms: dict[str, list[Run]], path: str | Path) -> Path:
    """runs.csv: one row per reported run (per seed), so every statistic can be recomputed.

    Columns: :data:`RUNS_CSV_FIELDS`, then any corruption outside the 19 that a run measured.
    """
    rows = [run_row(name, run) for name, runs in arms.items() for run in sorted(runs, key=lambda r: r.seed)]
    extra = sorted({key for row in rows for key in row} - set(RUNS_CSV_FIELDS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*RUNS_CSV_FIELDS, *extra])
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
    return Path(path)


def per_seed(runs: list[Run], severity: int) -> dict[int, float]:
    """{seed: error} at ``severity`` (0: clean; s: the mean over corruptions at s)."""
    return {run.seed: severity_errors(run)[severity] for run in runs if severity in severity_errors(run)}


def per_seed_corruption(runs: list[Run]) -> dict[int, float]:
    """{seed: mean corruption error} of the runs that measured one."""
    return {run.seed: e for run in runs if (e := corruption_error(run)) is not None}


def interval_cell(d) -> str:
    """A difference as "mean [low, high]"."""
    return f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"


def paired_table(arms: dict[str, list[Run]], baseline: str = "sgd", margin: float = EQUIVALENCE_MARGIN
                 ) -> tuple[str, dict[str, dict]]:
    """Markdown of every arm minus ``baseline``, paired by seed, and the numbers behind it.

    Clean: mean difference [95 % CI] and the TOST verdict within +-``margin`` pt. Mean corruption
    error (over every corruption and severity): its difference [95 % CI], descriptive, no test.
    Severity s: the mean corruption error's difference [95 % CI], Holm-adjusted p across the
    severities present.
    """
    base = arms[baseline]
    severities = sorted(s for s in severity_errors(base[0]) if s > 0)
    header = ["arm", "pairs", "clean Δ [95 % CI]", f"clean within ±{margin:g} pt (TOST)",
              "mean corr. Δ [95 % CI]", *(f"sev {s} Δ [95 % CI] (Holm p)" for s in severities)]
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
        corruption = paired_interval(per_seed_corruption(base), per_seed_corruption(runs))
        numbers[name] = {"pairs": clean.n, "clean": clean, "clean_equivalent": equal, "corruption": corruption,
                         "severities": dict(zip(severities, zip(per_severity, adjusted)))}
        verdict = f"yes (90 % CI [{equal.low:+.2f}, {equal.high:+.2f}])" if equal.equivalent else \
            f"not shown (90 % CI [{equal.low:+.2f}, {equal.high:+.2f}])"
        cells = [f"{interval_cell(d)} ({p:.3g})" for d, p in zip(per_severity, adjusted)]
        corruption_cell = interval_cell(corruption) if corruption is not None else "n/a"
        lines.append("| " + " | ".join([name, str(clean.n), interval_cell(clean), verdict, corruption_cell,
                                        *cells]) + " |")
    return "\n".join(lines), numbers
