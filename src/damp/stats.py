"""Paired statistics of the evidence suites (docs/evidence.md): runs of two methods with the same seed
share initial weights and data order, so they are compared by their per-seed differences.

Pure functions of numbers: 95 % t-intervals of a mean paired difference, Holm's step-down
correction across several tests, and TOST equivalence within a fixed margin.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _scipy


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``b - a`` over paired seeds, its t-interval and two-sided p-value (H0: mean 0)."""

    mean: float
    low: float
    high: float
    p_value: float
    n: int
    level: float


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> list[float]:
    """``b[seed] - a[seed]`` for every seed both have, in seed order (a seed missing in one is dropped)."""
    return [b[s] - a[s] for s in sorted(a.keys() & b.keys())]


def t_interval(differences: Sequence[float], level: float = 0.95) -> PairedDifference:
    """The ``level`` t-interval of the mean difference (n - 1 degrees of freedom); needs n >= 2."""
    n = len(differences)
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 paired seeds, got {n}")
    mean = statistics.fmean(differences)
    se = statistics.stdev(differences) / math.sqrt(n)
    if se == 0:
        return PairedDifference(mean, mean, mean, 0.0 if mean else 1.0, n, level)
    half = _scipy.t.ppf(0.5 + level / 2, n - 1) * se
    p = 2 * _scipy.t.sf(abs(mean) / se, n - 1)
    return PairedDifference(mean, mean - half, mean + half, float(p), n, level)


def paired_interval(a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95
                    ) -> PairedDifference | None:
    """The t-interval of ``b - a`` over the seeds both have (:func:`paired`); None with fewer than 2."""
    differences = paired(a, b)
    return t_interval(differences, level) if len(differences) >= 2 else None


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = round(running, 12)
    return adjusted


@dataclass(frozen=True)
class Equivalence:
    """TOST: ``equivalent`` when the (1 - 2 alpha) interval lies inside (-margin, +margin)."""

    equivalent: bool
    p_value: float  # the larger of the two one-sided p-values
    low: float
    high: float
    margin: float


def tost(differences: Sequence[float], margin: float, alpha: float = 0.05) -> Equivalence:
    """Two one-sided t-tests of |mean difference| < ``margin`` (Schuirmann 1987)."""
    n = len(differences)
    if n < 2:
        raise ValueError(f"TOST needs at least 2 paired seeds, got {n}")
    mean = statistics.fmean(differences)
    se = statistics.stdev(differences) / math.sqrt(n)
    interval = t_interval(differences, 1 - 2 * alpha)
    if se == 0:
        inside = abs(mean) < margin
        return Equivalence(inside, 0.0 if inside else 1.0, interval.low, interval.high, margin)
    p_lower = _scipy.t.sf((mean + margin) / se, n - 1)  # H0: mean <= -margin
    p_upper = _scipy.t.cdf((mean - margin) / se, n - 1)  # H0: mean >= +margin
    p = float(max(p_lower, p_upper))
    return Equivalence(p < alpha, p, interval.low, interval.high, margin)
