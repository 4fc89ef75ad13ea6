"""Two-process DDP (gloo on CPU): weights stay in sync, noise differs per rank, runs reproduce."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ddp(name: str, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(WORKER), name, str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["damp", "sam"])
def test_ddp_two_ranks(name, tmp_path):
    first = run_ddp(name, tmp_path / "a.pt")
    p0, p1 = first["params"]
    assert torch.equal(p0, p1), "parameters diverged across ranks"
    s0, s1 = first["seen"]
    if name == "damp":
        assert not torch.equal(s0, s1), "ranks drew the same noise"
    else:  # SAM's first pass runs at the clean, synchronised weights
        assert torch.equal(s0, s1)
    second = run_ddp(name, tmp_path / "b.pt")
    assert torch.equal(second["params"][0], p0), "same seed did not reproduce the run"
