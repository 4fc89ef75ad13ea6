"""The command line: version, help, a short demo run, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from damp import __version__
from damp.cli import main
from damp.config import load_config, to_dict
from damp.demo import PRESET_DIR
from damp.report import run_label


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "damp.cli", *args], capture_output=True, text=True, timeout=300)


def test_version_and_help():
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"damp {__version__}"
    help_text = run_cli("demo", "--help").stdout
    assert "--methods" in help_text and "--epochs" in help_text
    package = subprocess.run([sys.executable, "-m", "damp", "--version"], capture_output=True, text=True, timeout=300)
    assert package.returncode == 0 and package.stdout.strip() == f"damp {__version__}"  # python -m damp


def test_short_demo_writes_results_and_report(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--epochs", "1", "--methods", "sgd,damp",
                 "--corruptions", "gaussian_noise,impulse_noise", "--severities", "1,5", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| sgd |" in printed and "| damp |" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"sgd", "damp"}
    run = json.loads((out / "damp" / "results.json").read_text())
    assert set(run["corruptions"]) == {"gaussian_noise", "impulse_noise"}
    assert set(run["corruptions"]["gaussian_noise"]) == {"1", "5"}
    assert 0 <= run["clean"]["error"] <= 100 and set(run["clean"]) == {"error", "nll", "ece"}
    report = (out / "report.md").read_text()
    label = run_label(to_dict(load_config(PRESET_DIR / "damp.yaml")))  # the preset owns σ
    assert f"| {label} | 1 |" in report and label.startswith("damp σ=") and "2 corruptions" in report
    # Re-running into the demo's own directory is allowed.
    assert main(["demo", "--out", str(out), "--epochs", "1", "--methods", "sgd", "--corruptions",
                 "shot_noise", "--severities", "2", "--quiet"]) == 0


@pytest.mark.parametrize("args,message", [
    (["demo", "--methods", "sgd,nope"], "Unknown demo method"),
    (["demo", "--corruptions", "fogg"], "unknown corruption 'fogg' (did you mean 'fog'?)"),
])
def test_bad_input_is_one_line_and_nonzero(args, message, tmp_path):
    done = run_cli(*args, "--out", str(tmp_path / "o"), "--quiet")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and message in done.stderr


def test_demo_refuses_a_foreign_nonempty_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    done = run_cli("demo", "--out", str(tmp_path), "--epochs", "1", "--quiet")
    assert done.returncode == 2 and "not written by `damp demo`" in done.stderr
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_bad_argument_values_exit_nonzero():
    assert run_cli("demo", "--severities", "6").returncode == 2
    assert run_cli("demo", "--epochs", "0").returncode == 2


@pytest.mark.parametrize("args,message", [
    (["evaluate"], "one of the arguments target --model is required"),
    (["evaluate", "runs/x", "--model", "m:f"], "not allowed with argument target"),
    (["evaluate", "runs/x", "--weights", "w.pt", "--data", "digits"], "--weights, --data: only with --model"),
    (["evaluate", "--model", "m:f", "--data", "digits", "--imagenet-a", "a"], "--imagenet-a: not with --model"),
    (["bench", "--out", "b.json", "--images", "40"], "--images: only with --model"),
    (["demo", "--severities", "6"], "--severities"),
    (["train"], "required: --out"),
])
def test_modes_and_argparse_errors_are_one_line(args, message):
    """A flag outside its mode (argument groups "with --model" / "not with --model") and argparse's own
    errors: one stderr line, exit 2, before any work."""
    done = run_cli(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and message in done.stderr, done.stderr
