"""benchmarks/suite.sh end to end at smoke size (digits in place of Fashion-MNIST): tuning sweeps,
final seeds, RESULTS.md with every claim section, and a rerun that resumes instead of retraining."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SMOKE = ["data.name=digits", "trainer.max_steps=2", "trainer.log_every=1", "eval.corruptions=gaussian_noise,zoom_blur",
         "eval.severities=[1,5]", "eval.fgsm=[0.01]", "data.eval_batch_size=256"]
# Every claim section needs these arms; every other preset is loaded by tests/config/test_presets.py.
PARTS = ["sgd", "dropout", "damp", "daap", "sam", "sgd_zoom_blur", "report"]


def run_suite(tmp_path: Path) -> subprocess.CompletedProcess:
    args = ["bash", str(REPO / "benchmarks" / "suite.sh"), "fashion_mnist", "--out", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results")]
    for item in SMOKE:
        args += ["--set", item]
    env = dict(os.environ, DAMP=str(Path(sys.executable).with_name("damp")))
    return subprocess.run(args + PARTS, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_suite_writes_results_md_and_resumes(tmp_path):
    done = run_suite(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    text = (tmp_path / "results" / "RESULTS.md").read_text()
    assert "`bash benchmarks/suite.sh fashion_mnist`" in text
    # Claims 1 and 3 by the protocol's paired rules; claims 2 and 4/5 by the mean-based ones.
    for heading in ("DAMP vs sgd (claim 1)", "DAMP vs dropout (claim 1)",
                    "DAMP vs DAAP at matched clean error (claim 3)",
                    "Single-corruption training vs DAMP in breadth (claim 2)",
                    "DAMP vs SAM/ASAM per unit of training time (claims 4, 5)"):
        section = text.split(f"### {heading}")[1].split("###")[0].strip()
        assert section.startswith(("**Reproduced.**", "**Partly reproduced.**", "**Not reproduced.**",
                                   "**Not assessable.**")), heading
    assert "### DAMP vs DAAP (claim 3)" not in text  # the test-set ranking of grid points is not the protocol's
    assert "| damp σ=0.3 | method.std=0.3 | 1 |" in text  # every grid point of the tuning table, with its seeds
    assert "## Verdicts of the protocol (docs/evidence.md)" in text
    damp_runs = sorted(p.name for p in (tmp_path / "runs" / "damp").iterdir() if p.is_dir())
    tuning = [name for name in damp_runs if name.endswith("__seed=0")]
    assert 4 <= len(tuning) <= 6 and len(damp_runs) == len(tuning) + 5  # grid (+ edges), then 5 fresh seeds
    assert (tmp_path / "results" / "runs.csv").read_text().count("\n") == 1 + 5 * 6  # 6 reported arms
    stamp = (tmp_path / "runs" / "damp" / damp_runs[0] / "results.json").stat().st_mtime_ns
    again = run_suite(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "runs" / "damp" / damp_runs[0] / "results.json").stat().st_mtime_ns == stamp


def test_converged_suite_needs_an_accepted_pilot_then_reports_fresh_seeds(tmp_path):
    import json

    results = tmp_path / "results"
    results.mkdir()
    args = ["bash", str(REPO / "benchmarks" / "suite.sh"), "fashion_mnist_converged", "--out", str(tmp_path / "runs"),
            "--results", str(results)]
    for item in [*SMOKE, "eval.fgsm=[]"]:
        args += ["--set", item]
    env = dict(os.environ, DAMP=str(Path(sys.executable).with_name("damp")))
    (results / "pilot1.json").write_text(json.dumps({"chosen": None}))
    refused = subprocess.run(args + ["sgd"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "no pilot stage accepted" in refused.stderr
    (results / "pilot2.json").write_text(json.dumps({"chosen": "300 images, width 4"}))
    done = subprocess.run(args + ["sgd", "damp", "report"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    damp = json.loads((tmp_path / "runs" / "damp" / "summary.json").read_text())
    assert damp["reported_seeds"] == [1, 2, 3, 4, 5]
    tuning = json.loads((tmp_path / "runs" / "damp" / "std=0.05__seed=0" / "results.json").read_text())
    assert tuning["corruptions"] == {} and "holdout_corruptions" in tuning  # tuning never touches the test set
    text = (results / "RESULTS.md").read_text()
    assert "## Paired differences to SGD" in text and "| damp | 5 |" in text
    verdicts = text.split("## Verdicts of the protocol (docs/evidence.md)")[1]
    assert "### DAMP vs sgd (claim 1)" in verdicts and "### DAMP at SGD's cost (claims 4, 5)" in verdicts
    assert (results / "runs.csv").read_text().count("\n") == 1 + 10  # header, 5 SGD and 5 DAMP seeds
    # The default `damp bench` files are read; they time resnet8 at width 32, not this smoke test's width 4.
    assert "benchmarks/results/cpu_bench_quick_sam_grads.json has no row for resnet8" in text


def test_suite_refuses_a_budget_that_is_not_whole_minutes():
    for bad in ["x", "0", "1.5"]:
        result = subprocess.run(["bash", str(REPO / "benchmarks" / "suite.sh"), "fashion_mnist_converged",
                                 "--budget-minutes", bad], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "--budget-minutes: a whole number of minutes" in result.stderr, bad


def test_suite_run_records_are_committed_and_their_checkpoints_are_not():
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0

    if subprocess.run(["git", "rev-parse"], cwd=REPO, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout (an sdist): no .gitignore to check")
    run = "results/fashion_mnist_converged/runs/damp/std=0.1__seed=1"
    assert not ignored(f"{run}/results.json") and not ignored(f"{run}/metrics.jsonl")
    assert ignored(f"{run}/last.pt") and ignored(f"{run}/previous.pt") and ignored(f"{run}/../.damp.lock")
    assert not ignored("results/fashion_mnist/runs/damp/std=0.05__seed=1/results.json")
    assert ignored("runs/my_run/results.json")  # users' own runs stay out of git


def _sweep_calls(tmp_path: Path, *args: str) -> list[str]:
    """The `damp` command lines suite.sh issues, recorded by a stand-in `damp` that trains nothing."""
    fake, log = tmp_path / "damp", tmp_path / "calls.txt"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    subprocess.run(["bash", str(REPO / "benchmarks" / "suite.sh"), *args], cwd=REPO, check=True, timeout=60,
                   env=dict(os.environ, DAMP=str(fake)), capture_output=True)
    return log.read_text().splitlines()


def test_small_suite_takes_a_budget_and_commits_its_records(tmp_path):
    timed = _sweep_calls(tmp_path, "fashion_mnist", "--budget-minutes", "5", "sgd", "damp")
    assert len(timed) == 2 and all("--budget-minutes" in call for call in timed)
    assert "--out results/fashion_mnist/runs/damp" in timed[1]
    (tmp_path / "calls.txt").unlink()
    untimed = _sweep_calls(tmp_path, "fashion_mnist", "sgd")
    assert len(untimed) == 1 and "--budget-minutes" not in untimed[0]  # only the converged suite defaults to 60


def test_each_fashion_mnist_report_sets_the_other_regime_beside_it(tmp_path):
    under = _sweep_calls(tmp_path, "fashion_mnist", "report")
    assert "--regime under-fitted --other-regime converged=results/fashion_mnist_converged/runs" in under[0]
    # Every arm of the suite, run or not, so RESULTS.md names the ones not finished.
    assert "--skip-unfinished" in under[0] and "results/fashion_mnist/runs/damp_augmix " in under[0]
    (tmp_path / "calls.txt").unlink()
    converged = _sweep_calls(tmp_path, "fashion_mnist_converged", "report")
    assert "--regime converged --other-regime under-fitted=results/fashion_mnist/runs" in converged[0]
    (tmp_path / "calls.txt").unlink()
    elsewhere = _sweep_calls(tmp_path, "fashion_mnist", "--out", str(tmp_path / "runs"), "report")
    assert "--regime" not in elsewhere[0]  # another --out: no other suite's records to set beside it


def test_suite_help_prints_its_whole_header():
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "suite.sh"), "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("# The evidence suite") and lines[-1].startswith("#") and "quiet runs" in lines[-1]
    assert any(line.startswith("# --bench JSON") for line in lines)
