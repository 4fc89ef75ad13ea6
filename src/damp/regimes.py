"""RESULTS.md's "The two regimes": each verdict of the protocol (docs/evidence.md) in two suites.

The paper's claims are made for models trained to convergence. The converged and the under-fitted
Fashion-MNIST suites run the same protocol, so putting their verdicts and DAMP's paired differences to
SGD side by side says what the regime changes. Everything here is computed from the suites' run
records. Only arms that follow the protocol (fresh seeds) count; a regime whose arms have not
finished yet, or whose verdict is not assessable, is reported as not yet assessed.
"""

from __future__ import annotations

from pathlib import Path

from damp.paired import interval_cell, per_seed, per_seed_corruption
from damp.report import Run
from damp.stats import paired_interval
from damp.suite_inputs import arms_of, finished_sweeps, fresh_seeds_only, load_inputs
from damp.verdicts import NOT_ASSESSABLE, protocol_claims

NOT_YET = "not yet assessed"
Regime = tuple[str, dict[str, list[Run]], list[Run]]  # (name, {arm: reported runs}, tuning runs)


def other_regimes(others: dict[str, str | Path]) -> list[Regime]:
    """Each other regime from its finished sweeps that follow the protocol (fresh seeds only); a regime
    with none has no arms yet."""
    regimes = []
    for name, root in others.items():
        inputs = load_inputs(finished_sweeps(root), keep=fresh_seeds_only)
        regimes.append((name, arms_of(inputs.selected), inputs.tuning))
    return regimes


def _per_seed(runs: list[Run], key: str) -> dict[int, float]:
    """{seed: clean error} (``key`` "clean") or {seed: mean corruption error} (``key`` "corruption")."""
    return per_seed(runs, 0) if key == "clean" else per_seed_corruption(runs)


def damp_minus(arms: dict[str, list[Run]], key: str, other: str = "sgd") -> str:
    """DAMP − ``other`` paired by seed, "mean [95 % CI]" in pt, or :data:`NOT_YET` with fewer than 2 pairs."""
    if "damp" not in arms or other not in arms:
        return NOT_YET
    difference = paired_interval(_per_seed(arms[other], key), _per_seed(arms["damp"], key))
    return interval_cell(difference) if difference is not None else NOT_YET


def regimes_section(regimes: list[Regime], arm_of) -> list[str]:
    """RESULTS.md lines comparing the protocol's verdicts across ``regimes``, in column order. ``arm_of``
    maps a run to its arm's name, as for :func:`~damp.verdicts.protocol_claims`."""
    claims = [protocol_claims(arms, tuning, arm_of) if "sgd" in arms else [] for _, arms, tuning in regimes]
    # A verdict the rule could not reach ("not assessable") waits for runs, like a missing one.
    verdicts = [{heading: verdict for heading, verdict, _ in c if verdict != NOT_ASSESSABLE} for c in claims]
    headings = list(dict.fromkeys(h for c in claims for h, _, _ in c))
    names = [name for name, _, _ in regimes]
    lines = ["## The two regimes", "", "The same protocol (docs/evidence.md) in each regime; every cell is computed "
             "from that suite's run records. Differences are DAMP − SGD (or − DAAP) in pt, paired by seed, with "
             "95 % t-intervals: a verdict is its rule's outcome, these rows are the sizes behind it.", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {h} | " + " | ".join(v.get(h, NOT_YET) for v in verdicts) + " |" for h in headings]
    rows = (("SGD, clean error", "clean", "sgd"), ("SGD, mean corruption error", "corruption", "sgd"),
            ("DAAP, mean corruption error", "corruption", "daap"))
    for label, key, other in rows:
        lines.append(f"| DAMP − {label} | " + " | ".join(damp_minus(arms, key, other) for _, arms, _ in regimes)
                     + " |")
    assessed = [h for h in headings if all(h in v for v in verdicts)]
    differ = [h for h in assessed if len({v[h] for v in verdicts}) > 1]
    same = [h for h in assessed if h not in differ]
    lines += ["", "**What the regime changes.** " + _changes(names, verdicts, differ, same, headings), ""]
    return lines


def _changes(names: list[str], verdicts: list[dict[str, str]], differ: list[str], same: list[str],
             headings: list[str]) -> str:
    """The closing paragraph: which verdicts differ between the regimes, which agree, which wait for runs."""
    if not headings:
        return "Nothing yet: no regime has both an SGD and a DAMP arm."
    parts = []
    if differ:
        parts.append("The verdict differs for " + "; ".join(
            f"{h} ({', '.join(f'{n}: {v[h]}' for n, v in zip(names, verdicts))})" for h in differ) + ".")
    if same:
        parts.append("It is the same for " + "; ".join(f"{h} ({verdicts[0][h]})" for h in same) + ".")
    pending = [h for h in headings if h not in differ and h not in same]
    if pending:
        parts.append("Not yet comparable, because a regime lacks the arms: " + "; ".join(pending) + ".")
    return " ".join(parts)
