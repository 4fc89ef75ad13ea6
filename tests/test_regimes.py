"""RESULTS.md's "The two regimes": the protocol's verdicts of two suites side by side, from their numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from damp.cli import main
from damp.regimes import NOT_YET, damp_minus, regimes_section
from damp.suite_inputs import finished_sweeps
from damp.report import Run
from tests.test_evidence import _suite

NOISE = [0.05, -0.1, 0.08, -0.02, 0.03]  # per-seed wobble, so paired differences have a spread


def run(arm: str, seed: int, clean: float, corrupted: float, seconds: float = 100.0) -> Run:
    severity = {str(s): corrupted + s + NOISE[seed - 1] for s in range(1, 6)}
    results = {"clean": {"error": clean + NOISE[seed - 1]},
               "corruptions": {"contrast": {s: {"error": e} for s, e in severity.items()}},
               "summary": {"severity_error": severity, "mean_corruption_error": corrupted + 3 + NOISE[seed - 1]},
               "meta": {"train_seconds": seconds}}
    return Run(Path(f"{arm}{seed}"), arm, seed, results)


def arms(damp_clean: float, damp_corrupted: float) -> dict[str, list[Run]]:
    return {"sgd": [run("sgd", s, 10.0, 30.0) for s in range(1, 6)],
            "damp": [run("damp", s, damp_clean + 0.01 * s, damp_corrupted + 0.01 * s, 150.0) for s in range(1, 6)]}


def arm_of(r: Run) -> str:
    return r.label


def test_verdicts_that_differ_and_agree_are_named():
    converged, underfitted = arms(10.1, 27.0), arms(11.5, 27.0)  # the under-fitted DAMP loses 1.5 pt clean
    lines = regimes_section([("converged", converged, []), ("under-fitted", underfitted, [])], arm_of)
    text = "\n".join(lines)
    assert "| | converged | under-fitted |" in text
    assert "| DAMP vs sgd (claim 1) | reproduced | partly reproduced |" in text
    assert "| DAMP at SGD's cost (claims 4, 5) | not reproduced | not reproduced |" in text
    changes = text.split("**What the regime changes.**")[1]
    assert "differs for DAMP vs sgd (claim 1) (converged: reproduced, under-fitted: partly reproduced)" in changes
    assert "same for DAMP at SGD's cost (claims 4, 5) (not reproduced)" in changes


def test_paired_differences_per_regime():
    assert damp_minus(arms(10.1, 27.0), "clean") == "+0.13 [+0.11, +0.15]"  # 0.1 + 0.01 s, s = 1..5
    assert damp_minus(arms(10.1, 27.0), "corruption") == "-2.97 [-2.99, -2.95]"
    assert damp_minus({"sgd": arms(10, 27)["sgd"]}, "clean") == NOT_YET
    with_daap = {**arms(10.1, 27.0), "daap": [run("daap", s, 10.0, 28.0) for s in range(1, 6)]}
    assert damp_minus(with_daap, "corruption", "daap") == "-0.97 [-0.99, -0.95]"
    assert damp_minus(arms(10.1, 27.0), "corruption", "daap") == NOT_YET
    text = "\n".join(regimes_section([("converged", with_daap, []), ("under-fitted", arms(10, 27), [])], arm_of))
    assert "| DAMP − DAAP, mean corruption error | -0.97 [-0.99, -0.95] | not yet assessed |" in text


def test_a_regime_without_runs_is_not_yet_assessed():
    text = "\n".join(regimes_section([("converged", arms(10.1, 27.0), []), ("under-fitted", {}, [])], arm_of))
    assert f"| DAMP vs sgd (claim 1) | reproduced | {NOT_YET} |" in text
    assert f"| DAMP − SGD, clean error | +0.13 [+0.11, +0.15] | {NOT_YET} |" in text
    assert "Not yet comparable, because a regime lacks the arms: DAMP vs sgd (claim 1)" in text


def test_a_verdict_the_rule_cannot_reach_waits_like_a_missing_arm():
    one_seed = {name: runs[:1] for name, runs in arms(11.5, 27.0).items()}  # claim 1 needs 2 paired seeds
    text = "\n".join(regimes_section([("converged", arms(10.1, 27.0), []), ("under-fitted", one_seed, [])], arm_of))
    assert f"| DAMP vs sgd (claim 1) | reproduced | {NOT_YET} |" in text
    changes = text.split("**What the regime changes.**")[1]
    assert "differs for DAMP vs sgd" not in changes and "lacks the arms: DAMP vs sgd (claim 1)" in changes


def _fresh_seed_suite(root: Path, damp_corrupted: float = 25.0) -> list[str]:
    """test_evidence's synthetic suite, with seed 0 as the tuning seed and seeds 1-2 reported (the protocol)."""
    paths = _suite(root, damp_corrupted)
    for path in paths:
        summary_file = Path(path) / "summary.json"
        summary = json.loads(summary_file.read_text())
        summary_file.write_text(json.dumps({**summary, "reported_seeds": [1, 2], "tuning_seeds": 1}))
    return paths


def test_report_sets_another_suites_finished_arms_beside_its_own(tmp_path):
    this, other = _fresh_seed_suite(tmp_path / "this"), _fresh_seed_suite(tmp_path / "other", damp_corrupted=35.0)
    unfinished = tmp_path / "other" / "augmix"
    unfinished.mkdir()
    (unfinished / "sweep.yaml").write_text("config: x\n")  # still running: left out, not an error
    assert finished_sweeps(tmp_path / "other") == sorted(map(Path, other))
    old_protocol = tmp_path / "other" / "dropout" / "summary.json"  # reports its tuning seed: does not count
    old_protocol.write_text(json.dumps({**json.loads(old_protocol.read_text()), "reported_seeds": [0, 1, 2]}))
    out = tmp_path / "results"
    assert main(["report", *this, "--out", str(out), "--claims", "--regime", "converged",
                 "--other-regime", f"under-fitted={tmp_path / 'other'}"]) == 0
    section = (out / "RESULTS.md").read_text().split("## The two regimes")[1].split("\n## ")[0]
    assert "| | converged | under-fitted |" in section
    assert "| DAMP vs sgd (claim 1) | reproduced | not reproduced |" in section  # the other suite's own numbers
    assert f"| DAMP vs dropout (claim 1) | reproduced | {NOT_YET} |" in section
    assert "| DAMP − SGD, mean corruption error | -5.00 [-5.00, -5.00] | +5.00 [+5.00, +5.00] |" in section


@pytest.mark.parametrize("args,message", [
    (["--other-regime", "a=."], "go together"),
    (["--regime", "a"], "go together"),
    (["--regime", "a", "--other-regime", "nodir"], "expected NAME=DIR"),
    (["--regime", "a", "--other-regime", "a=."], "name the two regimes apart"),
    (["--regime", "a", "--other-regime", "b=/no/such/dir"], "is not a directory"),
])
def test_bad_regime_options_are_one_line(tmp_path, capsys, args, message):
    assert main(["report", *_fresh_seed_suite(tmp_path), "--out", str(tmp_path / "r"), "--claims", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()  # checked before anything is written


def test_regime_options_need_claims(tmp_path, capsys):
    assert main(["report", *_fresh_seed_suite(tmp_path), "--out", str(tmp_path / "r"), "--regime", "a",
                 "--other-regime", f"b={tmp_path}"]) == 2
    assert "need --claims" in capsys.readouterr().err


def test_a_protocol_suite_never_reports_its_tuning_runs_test_numbers(tmp_path):
    out = tmp_path / "results"
    assert main(["report", *_fresh_seed_suite(tmp_path / "suite"), "--out", str(out), "--claims"]) == 0
    text = (out / "RESULTS.md").read_text()
    assert "### DAMP vs DAAP (claim 3)" not in text and "### DAMP vs SGD per severity (claim 1)" not in text
    assert "### DAMP vs DAAP at matched clean error (claim 3)" in text  # the protocol's hold-out rule instead
    assert "DAMP vs DAAP at their selected σ" in text and "σ=0.3" not in text.split("## Wall-clock")[0]
