"""`damp bench` step times: every method timed, the noise floor, peak memory and the CPU targets judged."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from damp import speed


@pytest.mark.parametrize("model", ["mlp", "small_cnn", "resnet8"])
def test_step_time_ratios_report_floor_memory_and_targets(model):
    row = speed.step_time_ratios(model, 16, torch.device("cpu"), m=2, repeats=1)
    assert set(row["seconds_per_step"]) == {"sgd", "damp", "daap", "sam", "asam", "damp_ghost"}
    assert row["noise_floor"] > 0 and all(v > 0 for v in row["step_time_ratio"].values())
    assert set(row["peak_memory_mib"]) == set(row["seconds_per_step"])
    assert row["damp_executor"] == ("loop" if model == "mlp" else "cpu")  # BatchNorm-free models run the loop
    assert set(row["targets"]) == set(speed.CPU_TARGETS.get(model, {}))
    for name, (value, above_floor) in speed.CPU_TARGETS.get(model, {}).items():
        target = row["targets"][name]
        assert target["limit"] == pytest.approx(row["noise_floor"] + value if above_floor else value)
        assert target["met"] == (row["step_time_ratio"][name] <= target["limit"])


def test_step_time_ratios_time_the_variants_named():
    # benchmarks/executor_compare.py times one method in several executors through this row.
    variants = {f"damp_{ex}": speed.build_variant("damp", ex, 2) for ex in ("loop", "split")}
    row = speed.step_time_ratios("mlp", 16, torch.device("cpu"), m=2, repeats=1, variants=variants)
    assert set(row["seconds_per_step"]) == {"sgd", "damp_loop", "damp_split"}
    assert set(row["step_time_ratio"]) == {"damp_loop", "damp_split"} and row["noise_floor"] > 0
    assert row["targets"] == {}  # the CPU targets name the bench's own variants only


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retain_freed_heap_is_accepted_by_glibc():
    # Process-wide and irreversible, so it runs in a child process; both settings must be accepted.
    code = "from damp.speed import retain_freed_heap; print(retain_freed_heap())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
