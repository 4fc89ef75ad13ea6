"""Exact resume on CUDA: a run killed after N steps and resumed ends as an uninterrupted one.

What CUDA adds over the CPU test (tests/test_train.py): the data, its augmentation and the DAMP noise
live on the device and come from CUDA generators, dropout draws from the CUDA global RNG (saved in
the checkpoint as ``cuda_rng``), and DAMP/SAM run the fused executor ("auto" on CUDA).
"""

from __future__ import annotations

import json

import pytest
import torch

from damp.checkpoint import load_checkpoint
from damp.config import load_config
from damp.methods import SAM
from damp.methods.noise import WeightNoise
from damp.train import train
from tests.test_train import METHODS, QUICK, interrupt_after

pytestmark = pytest.mark.cuda

STEPS, KILLED_AFTER = 8, 7  # killed during step 8; the last checkpoint is step 6
BASE = [o for o in QUICK if not o.startswith("trainer.device")] + [
    "trainer.device=cuda", "model.dropout=0.3", f"trainer.max_steps={STEPS}", "eval.corruptions=none",
    "trainer.checkpoint_every=3", "trainer.log_every=2"]
KILLABLE = {"damp": WeightNoise, "sam": SAM}


def full_and_resumed(tmp_path, monkeypatch, method: str, extra: list[str]) -> tuple[dict, dict]:
    """Results and final checkpoints of an uninterrupted run and of a killed-then-resumed one."""
    overrides = BASE + METHODS[method] + extra
    full = train(load_config(None, overrides), tmp_path / "full")
    with monkeypatch.context() as patch:
        interrupt_after(patch, KILLED_AFTER, KILLABLE[method])
        with pytest.raises(KeyboardInterrupt):
            train(load_config(None, overrides), tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 6
    resumed = train(load_config(None, overrides), tmp_path / "resumed", resume=True)
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "resumed" / "last.pt")
    return {"results": full, "state": a}, {"results": resumed, "state": b}


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", list(KILLABLE))
def test_resume_is_bit_identical_with_deterministic_kernels(method, tmp_path, monkeypatch,
                                                            deterministic_cuda):
    """fp32, deterministic cuDNN algorithms: weights, buffers, optimizer state, metrics and the final
    evaluation are bit-identical."""
    full, resumed = full_and_resumed(tmp_path, monkeypatch, method, [])
    for key, value in full["state"]["model"].items():
        assert torch.equal(value, resumed["state"]["model"][key]), key
    for key, value in full["state"]["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, resumed["state"]["optimizer"]["state"][key][name]), (key, name)
    assert (tmp_path / "full" / "metrics.jsonl").read_text() == \
        (tmp_path / "resumed" / "metrics.jsonl").read_text()
    assert full["results"]["clean"] == resumed["results"]["clean"]


@pytest.mark.parametrize("method", list(KILLABLE))
def test_resume_matches_within_tolerance_with_autotuned_bf16(method, tmp_path, monkeypatch):
    """bf16 autocast + channels_last + cuDNN autotuning (the ResNet presets' settings, as users run them).

    Not bit-identical, and not because of the resume: cuDNN's autotuner may pick a different kernel in
    each process, and some backward kernels accumulate with atomics, so even two uninterrupted runs
    differ in the last bits. Identical here: the steps, epochs and learning rates logged, the number of
    optimizer steps and the RNG streams (data order, augmentation, noise, dropout). Within tolerance:
    losses (1e-2 relative), weights and buffers (rtol 1e-2, atol 1e-3), clean error (0.5 points).
    """
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        full, resumed = full_and_resumed(tmp_path, monkeypatch, method,
                                         ["trainer.precision=bf16", "trainer.channels_last=true"])
    finally:
        torch.backends.cudnn.benchmark = old
    a, b = metrics(tmp_path / "full"), metrics(tmp_path / "resumed")
    assert [(r["step"], r["epoch"], r["lr"]) for r in a] == [(r["step"], r["epoch"], r["lr"]) for r in b]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-2)
    assert full["state"]["step"] == resumed["state"]["step"] == STEPS
    for key, value in full["state"]["model"].items():
        other = resumed["state"]["model"][key]
        if value.is_floating_point():
            torch.testing.assert_close(other, value, rtol=1e-2, atol=1e-3, msg=key)
        else:
            assert torch.equal(value, other), key
    assert resumed["results"]["clean"]["error"] == pytest.approx(full["results"]["clean"]["error"], abs=0.5)
