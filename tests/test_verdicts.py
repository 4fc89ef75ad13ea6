"""The protocol's verdicts (docs/evidence.md) follow the paired numbers in every direction."""

from __future__ import annotations

from pathlib import Path

import pytest

from damp.report import Run
from damp.verdicts import (claim_cost, claim_damp_dominates_daap, claim_lower_without_losing_clean,
                           protocol_claims, training_time_ratio, uninformative_corruptions)

NOISE = [0.05, -0.1, 0.08, -0.02, 0.03]  # per-seed wobble, so the paired differences have a spread


def run(seed: int, clean: float, by_severity: dict[int, float], seconds: float = 100.0, holdout=None) -> Run:
    corruptions = {name: {str(s): {"error": e + NOISE[seed - 1]} for s, e in by_severity.items()}
                   for name in ("gaussian_noise", "contrast")}
    severity = {str(s): e + NOISE[seed - 1] for s, e in by_severity.items()}
    results = {"clean": {"error": clean + NOISE[seed - 1]}, "corruptions": corruptions,
               "summary": {"severity_error": severity}, "meta": {"train_seconds": seconds}}
    if holdout is not None:
        results["holdout"] = {"error": holdout[0]}
        results["holdout_corruptions"] = {"mean_corruption_error": holdout[1]}
    return Run(Path(f"r{seed}"), "x", seed, results)


SGD = [run(s, 10.0, {1: 15, 2: 20, 3: 25, 4: 30, 5: 35}, 100.0) for s in range(1, 6)]


@pytest.mark.parametrize("shift,clean,verdict", [
    ({1: -2, 2: -2, 3: -2, 4: -2, 5: -2}, 10.1, "reproduced"),
    ({1: -2, 2: -2, 3: -2, 4: -2, 5: -2}, 11.5, "partly reproduced"),  # lower everywhere but loses clean accuracy
    ({1: 0, 2: 0, 3: 0, 4: -2, 5: -2}, 10.0, "partly reproduced"),
    ({1: 1, 2: 1, 3: 1, 4: 1, 5: 1}, 10.0, "not reproduced"),
])
def test_claim_one_follows_the_paired_numbers(shift, clean, verdict):
    damp = [run(s, clean + 0.01 * s, {k: v + shift[k] + 0.01 * s for k, v in
                                      {1: 15, 2: 20, 3: 25, 4: 30, 5: 35}.items()}) for s in range(1, 6)]
    got, text = claim_lower_without_losing_clean(damp, SGD, "sgd")
    assert got == verdict, text
    assert "Holm p" in text and "TOST" in text


def test_claim_three_is_a_pareto_comparison_on_hold_out_numbers():
    damp = [run(1, 0, {}, holdout=(10.0, 20.0)), run(1, 0, {}, holdout=(11.0, 18.0))]
    dominated = [run(1, 0, {}, holdout=(10.5, 21.0)), run(1, 0, {}, holdout=(12.0, 19.0))]
    assert claim_damp_dominates_daap(damp, dominated)[0] == "reproduced"
    assert claim_damp_dominates_daap(damp, dominated + [run(1, 0, {}, holdout=(9.0, 25.0))])[0] == "partly reproduced"
    assert claim_damp_dominates_daap(damp, [run(1, 0, {}, holdout=(9.0, 15.0))])[0] == "not reproduced"
    assert claim_damp_dominates_daap(damp, [run(1, 0, {})])[0] == "not assessable"


def test_cost_and_uninformative_corruptions():
    ratio = training_time_ratio([run(s, 10, {5: 30}, 105.0) for s in range(1, 3)], SGD[:2])
    assert claim_cost(ratio)[0] == "reproduced"
    verdict, text = claim_cost(training_time_ratio([run(s, 10, {5: 30}, 150.0) for s in range(1, 3)], SGD[:2]))
    assert verdict == "not reproduced" and "1.50×" in text
    assert training_time_ratio([run(1, 10, {5: 30}, None)], SGD[:1]) is None
    assert claim_cost(None)[0] == "not assessable"
    flat = [run(s, 10.0, {5: 10.5}) for s in range(1, 3)]
    rises, uninformative = uninformative_corruptions(flat)
    assert rises["contrast"] == pytest.approx(0.5) and uninformative == ["contrast", "gaussian_noise"]
    assert uninformative_corruptions(SGD)[1] == []


def test_a_clean_loss_inside_the_margin_is_named_and_ties_are_counted():
    damp = [run(s, 10.2 + 0.01 * s, {1: 13, 2: 18, 3: 23, 4: 28, 5: 33}) for s in range(1, 6)]
    verdict, text = claim_lower_without_losing_clean(damp, SGD, "sgd")
    assert verdict == "reproduced" and "measurably higher" in text  # +0.2 pt: equivalent, yet above 0
    _, text = claim_lower_without_losing_clean([run(s, 10.0, {1: 13, 2: 18, 3: 23, 4: 28, 5: 33})
                                                for s in range(1, 6)], SGD, "sgd")
    assert "measurably higher" not in text
    tie = claim_damp_dominates_daap([run(1, 0, {}, holdout=(10.0, 20.0))], [run(1, 0, {}, holdout=(10.0, 21.0))])
    assert tie[0] == "reproduced" and "1 of the dominations rest on a tie" in tie[1]
    strict = claim_damp_dominates_daap([run(1, 0, {}, holdout=(9.0, 20.0))], [run(1, 0, {}, holdout=(10.0, 21.0))])
    assert "tie" not in strict[1]


def test_a_failed_cost_claim_is_said_in_every_robustness_paragraph():
    def with_mean(r: Run, mean: float) -> Run:
        r.results["summary"]["mean_corruption_error"] = mean + NOISE[r.seed - 1]
        return r
    damp = [with_mean(run(s, 10.0, {1: 13, 2: 18, 3: 23, 4: 28, 5: 33}, 150.0), 20.0 + 0.1 * s) for s in range(1, 6)]
    daap = [with_mean(run(s, 10.0, {1: 14, 2: 19, 3: 24, 4: 29, 5: 34}, 180.0), 21.0) for s in range(1, 6)]
    arms = {"sgd": SGD, "damp": damp, "daap": daap}
    claims = protocol_claims(arms, [], lambda r: next(a for a, runs in arms.items() if r in runs))
    robustness = [text for heading, _, text in claims if "cost" not in heading]
    assert len(robustness) == 2 and all("1.50× SGD's training time" in text for text in robustness)
    assert "DAMP − DAAP, paired over 5 seeds, is -0.70 [" in robustness[1]  # test-set context beside the rule
    cheap = {**arms, "damp": [run(s, 10.0, {1: 13, 2: 18, 3: 23, 4: 28, 5: 33}, 100.0) for s in range(1, 6)]}
    claims = protocol_claims(cheap, [], lambda r: next(a for a, runs in cheap.items() if r in runs))
    assert not any("training time" in text for heading, _, text in claims if "cost" not in heading)
