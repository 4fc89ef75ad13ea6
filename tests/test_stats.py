"""Paired statistics against scipy's own tests and hand-computed cases."""

from __future__ import annotations

import pytest
from scipy import stats as scipy_stats

from damp.stats import holm, paired, paired_interval, t_interval, tost

A = {1: 10.0, 2: 11.0, 3: 9.5, 4: 10.4, 5: 10.1}
B = {1: 9.1, 2: 10.6, 3: 9.0, 4: 9.2, 5: 9.9, 6: 1.0}  # seed 6 has no partner


def test_paired_drops_unpaired_seeds_and_matches_ttest_rel():
    d = paired(A, B)
    assert d == pytest.approx([-0.9, -0.4, -0.5, -1.2, -0.2])
    ci = t_interval(d)
    ref = scipy_stats.ttest_rel([B[s] for s in sorted(A)], [A[s] for s in sorted(A)])
    assert ci.p_value == pytest.approx(ref.pvalue)
    low, high = ref.confidence_interval(0.95)
    assert (ci.low, ci.high) == pytest.approx((low, high))
    assert ci.n == 5 and ci.low < ci.mean < ci.high < 0
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([1.0])


def test_paired_interval_is_the_t_interval_of_the_shared_seeds_or_none_below_two():
    assert paired_interval(A, B) == t_interval(paired(A, B))
    assert paired_interval({1: 1.0}, B) is None and paired_interval(A, {7: 1.0}) is None


def test_holm_matches_the_step_down_rule():
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert holm([0.2, 0.001]) == [0.2, 0.002]
    assert holm([0.9, 0.8, 0.7]) == [1.0, 1.0, 1.0]  # capped at 1
    assert holm([0.04, 0.3, 0.5]) == [0.12, 0.6, 0.6]  # monotone in the sorted order


def test_tost_is_equivalent_exactly_when_the_90_percent_interval_is_inside_the_margin():
    small = [0.1, -0.2, 0.05, 0.15, -0.1]
    result = tost(small, margin=0.5)
    interval = t_interval(small, 0.90)
    assert result.equivalent and -0.5 < interval.low and interval.high < 0.5
    wide = [0.9, -0.8, 0.7, -0.6, 0.4]
    assert not tost(wide, margin=0.5).equivalent
    shifted = [0.6, 0.7, 0.65, 0.55, 0.6]  # precisely measured, but outside the margin
    assert not tost(shifted, margin=0.5).equivalent and tost(shifted, margin=1.0).equivalent
