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


@pytest.mark.slow
@pytest.mark.parametrize("method", [["method.name=sgd"], ["method.name=damp", "method.std=0.2",
                                                          "method.num_perturbations=4"],
                                    ["method.name=sgd", "data.augmix=true", "data.augmix_jsd=true"]])
def test_one_and_two_processes_train_the_same_weights(method, tmp_path):
    """Same global batches, augmentation (AugMix included), noise per sub-batch and synced BatchNorm: same weights.

    In float64, so that "up to float reduction order" is a tight bound: float32 runs differ by about
    1e-3 of an update after one step, from reduction order amplified by BatchNorm's cancellation.
    """
    from damp.config import load_config
    from damp.train import train

    common = ["trainer.device=cpu", "trainer.progress=false", "data.batch_size=32", "eval.corruptions=none",
              "trainer.max_steps=6", "trainer.checkpoint_every=6", "trainer.log_every=3", "trainer.precision=fp64",
              *method]
    train(load_config(None, common), tmp_path / "one")
    args = [a for pair in (("--set", c) for c in common) for a in pair]
    two = torchrun(*args, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    one_state = load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    two_state = load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    worst = max(float((one_state[k].double() - two_state[k].double()).abs().max()) for k in one_state)
    assert worst < 1e-10, f"1 vs 2 processes differ by {worst:.3g}"
