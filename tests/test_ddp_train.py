"""A 2-process gloo run of `damp train` (torchrun) trains, resumes, and keeps ranks in sync."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from damp.checkpoint import load_checkpoint
from tests.methods.test_ddp import free_port

ARGS = ["--set", "trainer.device=cpu", "--set", "trainer.progress=false", "--set", "data.batch_size=32",
        "--set", "method.name=damp", "--set", "method.std=0.2", "--set", "method.num_perturbations=4",
        "--set", "eval.corruptions=none", "--set", "trainer.checkpoint_every=2", "--set", "trainer.log_every=2"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "damp.cli", "train", *args]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_two_process_gloo_train_and_resume(tmp_path):
    out = tmp_path / "run"
    first = torchrun(*ARGS, "--set", "trainer.max_steps=4", "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 4 and len(state["rng"]) == 2  # one RNG state per rank
    assert state["method"]["step"] == 4
    second = torchrun(*ARGS, "--set", "trainer.max_steps=6", "--out", str(out), "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert load_checkpoint(out / "last.pt")["step"] == 6
    assert "clean error" in second.stdout


@pytest.mark.slow
def test_non_finite_loss_stops_every_rank_promptly(tmp_path):
    import time

    start = time.time()
    done = torchrun(*ARGS, "--set", "optim.lr=1e30", "--set", "trainer.max_steps=20", "--set",
                    "trainer.log_every=1", "--out", str(tmp_path / "run"))
    assert done.returncode != 0
    assert "non-finite loss" in done.stderr
    assert time.time() - start < 90, "a healthy rank waited for its peer"
