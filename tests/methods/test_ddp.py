"""Two-process DDP (gloo on CPU): the gradient of N processes is the gradient of one on the global batch."""

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


def run_ddp(name: str, executor: str, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(WORKER), name, executor, str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("name,executor", [("sgd", "auto"), ("damp", "split"), ("damp", "fused"), ("daap", "split"),
                                           ("sam", "split"), ("asam", "fused")])
def test_two_processes_compute_one_process_gradient(name, executor, tmp_path):
    """BatchNorm synced over processes, noise keyed by the global sub-batch: the same math on 1 or 2."""
    result = run_ddp(name, executor, tmp_path / "a.pt")
    torch.testing.assert_close(result["distributed"], result["reference"], rtol=1e-9, atol=1e-12)
    p0, p1 = result["params"]
    assert torch.equal(p0, p1), "parameters diverged across ranks"
