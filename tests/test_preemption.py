"""Preemption: SIGTERM / SIGINT / SIGUSR1 to a real `damp train` (or `damp sweep`) checkpoint and exit 75,
and the resumed run ends bit-identical to an uninterrupted one; torchrun ranks stop at one step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from damp.checkpoint import load_checkpoint
from damp.config import load_config
from damp.preemption import EXIT_PREEMPTED
from damp.train import train
from tests.methods.test_ddp import free_port
from tests.test_reliability import assert_same_state, rows

# Checkpoints by the step count never fall inside the run: the only mid-run one is the signal's.
RUN = ["--set", "trainer.device=cpu", "--set", "trainer.progress=false", "--set", "data.batch_size=64",
       "--set", "trainer.max_steps=40", "--set", "trainer.checkpoint_every=1000", "--set", "trainer.log_every=3",
       "--set", "eval.corruptions=none", "--set", "model.dropout=0.2", "--set", "method.name=damp",
       "--set", "method.std=0.2", "--set", "method.num_perturbations=4"]


def damp(*args: str) -> list[str]:
    return [sys.executable, "-m", "damp.cli", *args]


def wait_for_rows(proc: subprocess.Popen, path: Path, count: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while proc.poll() is None and rows(path) < count and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run(damp("train", *RUN, "--out", str(out)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_signal_checkpoints_exits_75_and_resume_is_bit_identical(sig, reference, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(damp("train", *RUN, "--out", str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for_rows(proc, out / "metrics.jsonl", 2)
    proc.send_signal(sig)
    proc.send_signal(sig)  # a second signal while the first is handled changes nothing
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert f"stopped by {sig.name} at step" in line and line.endswith("--resume"), line
    assert f"damp train {' '.join(RUN[:2])}" in line
    stopped = load_checkpoint(out / "last.pt")
    assert 0 < stopped["step"] < 40 and f"at step {stopped['step']};" in line
    resumed = subprocess.run(damp("train", *RUN, "--out", str(out), "--resume"), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_state(load_checkpoint(reference / "last.pt"), load_checkpoint(out / "last.pt"))
    assert (out / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


@pytest.mark.slow
def test_sweep_stops_on_sigterm_and_resumes(tmp_path):
    sweep = ["sweep", *RUN, "--set", "trainer.max_steps=20", "--grid", "method.std=0.1,0.2", "--seeds", "1",
             "--quiet", "--out", str(tmp_path / "sweep")]
    proc = subprocess.Popen(damp(*sweep), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(proc, tmp_path / "sweep" / "std=0.1__seed=0" / "metrics.jsonl", 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-2000:]
    assert "resume with: damp sweep" in err
    done = subprocess.run(damp(*sweep, "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "sweep" / "summary.json").is_file()


def test_clock_checkpoints_do_not_change_the_run(tmp_path):
    base = ["trainer.device=cpu", "trainer.progress=false", "trainer.max_steps=6", "trainer.checkpoint_every=1000",
            "trainer.log_every=4", "eval.corruptions=none", "data.batch_size=64"]
    plain = train(load_config(None, base + ["trainer.checkpoint_minutes=0"]), tmp_path / "plain")
    clocked = train(load_config(None, base + ["trainer.checkpoint_minutes=1e-9"]), tmp_path / "clocked")
    # A checkpoint after every step: the one before the last is step 5, between two log rows.
    assert load_checkpoint(tmp_path / "clocked" / "previous.pt")["step"] == 5
    assert not (tmp_path / "plain" / "previous.pt").exists()
    assert plain["clean"] == clocked["clean"]
    assert (tmp_path / "plain" / "metrics.jsonl").read_text() == (tmp_path / "clocked" / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="trainer.checkpoint_minutes"):
        load_config(None, ["trainer.checkpoint_minutes=-1"])


@pytest.mark.slow
def test_torchrun_ranks_stop_at_the_same_step(tmp_path):
    """SIGTERM to one rank only: both checkpoint at one step and exit; a resume matches an uninterrupted run."""
    args = ["--set", "trainer.device=cpu", "--set", "trainer.progress=false", "--set", "data.batch_size=32",
            "--set", "method.name=damp", "--set", "method.std=0.2", "--set", "method.num_perturbations=4",
            "--set", "eval.corruptions=none", "--set", "trainer.checkpoint_every=1000", "--set",
            "trainer.log_every=1", "--set", "trainer.max_steps=60"]

    def torchrun(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={free_port()}", "-m", "damp.cli", "train", *args, "--out", str(out), *extra]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = subprocess.run(torchrun(tmp_path / "reference"), env=env, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    out = tmp_path / "run"
    proc = subprocess.Popen(torchrun(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(proc, out / "metrics.jsonl", 3)
    workers = subprocess.run(["pgrep", "-f", f"damp.cli train .*--out {out}$", "-P", str(proc.pid)],
                             capture_output=True, text=True).stdout.split()
    assert len(workers) == 2, workers
    start = time.time()
    os.kill(int(workers[-1]), signal.SIGTERM)  # one rank only
    _, err = proc.communicate(timeout=120)
    assert time.time() - start < 60, "a rank waited for its peer"
    assert err.count(f"exitcode  : {EXIT_PREEMPTED}") + err.count("stopped by SIGTERM") >= 1, err[-3000:]
    state = load_checkpoint(out / "last.pt")
    assert 0 < state["step"] < 60 and len(state["rng"]) == 2
    resumed = subprocess.run(torchrun(out, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = load_checkpoint(tmp_path / "reference" / "last.pt"), load_checkpoint(out / "last.pt")
    assert all(torch.equal(expected["model"][k], got["model"][k]) for k in expected["model"])
