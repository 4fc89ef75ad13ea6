"""`damp bench` step times: every method timed, the noise floor, peak memory and the CPU targets judged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from damp import speed

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model", ["mlp", "small_cnn", "resnet8"])
def test_step_time_ratios_report_floor_memory_and_targets(model):
    row = speed.step_time_ratios(model, 16, torch.device("cpu"), m=2, repeats=1)
    assert set(row["seconds_per_step"]) == {"sgd", "damp", "daap", "sam", "asam", "damp_ghost"}
    assert row["noise_floor"] > 0 and all(v > 0 for v in row["step_time_ratio"].values())
    assert set(row["peak_memory_mib"]) == set(row["seconds_per_step"])
    # The executor the steps ran: on the BatchNorm-free MLP, "auto" settled by its check on the batch
    assert row["damp_executor"] == "cpu"
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
    code = "from damp.timing import retain_freed_heap; print(retain_freed_heap())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def _preset(directory, model: str) -> None:
    (directory / "sgd.yaml").write_text("data: {name: digits, batch_size: 16}\n"
                                        f"model: {{name: {model}, width: 8}}\nmethod: {{name: sgd}}\n"
                                        "trainer: {device: cpu, progress: false}\n")
    (directory / "damp.yaml").write_text("extends: sgd.yaml\nmethod: {name: damp, std: 0.1, num_perturbations: 2}\n")


def test_trainer_vs_bench_times_both_sets_of_objects(tmp_path):
    _preset(tmp_path, "small_cnn")
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "benchmarks/trainer_vs_bench.py", "--config-dir", str(tmp_path), "--rounds", "1",
                    "--threads", "1", "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    result = json.loads(out.read_text())
    assert set(result["ms_per_step"]) == {"sgd_trainer_model", "sgd_bench_model", "damp_trainer_objects",
                                          "damp_bench_objects", "damp_trainer_step"}
    assert result["batch"] == 16 and all(v > 0 for v in result["ms_per_step"].values())
    assert result["damp_over_sgd_trainer"] > 0 and result["damp_over_sgd_bench"] > 0


def test_trainer_vs_bench_refuses_a_model_the_bench_does_not_build(tmp_path):
    _preset(tmp_path, "preact_resnet18")
    done = subprocess.run([sys.executable, "benchmarks/trainer_vs_bench.py", "--config-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "trainer_vs_bench.py: model 'preact_resnet18' is not one of damp bench's models "
        "(resnet18, resnet8, small_cnn, mlp)"]


def test_executor_compare_writes_every_executor_named(tmp_path):
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "benchmarks/executor_compare.py", "--model", "mlp", "--executors", "loop,split",
                    "--rounds", "1", "--threads", "1", "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    result = json.loads(out.read_text())
    assert set(result["step_time_ratio"]) == {"damp_loop", "sam_loop", "damp_split", "sam_split"}
    assert result["threads"] == 1 and result["rounds"] == 1 and result["heap"] == "default"
    assert result["noise_floor"] > 0 and result["minor_page_faults"] >= 0


@pytest.mark.parametrize("preset", ["digits_small_cnn", "cifar10_resnet18"])
def test_the_bench_times_the_memory_layout_the_trainer_feeds(preset, tmp_path):
    """A one-channel batch leaves the loader's crop with NHWC strides, which convolutions follow; the
    bench's batch has the trainer's strides whatever the channel count."""
    from damp.config import load_config
    from damp.data.build import build_data
    from damp.data.cifar import write_cifar_fixture

    sets = ["data.batch_size=8"]
    if preset.startswith("cifar"):
        import numpy as np
        write_cifar_fixture(tmp_path, np.zeros((16, 32, 32, 3), np.uint8), np.arange(16) % 10)
        sets.append(f"data.root={tmp_path}")
    cfg = load_config(ROOT / "configs" / preset / "sgd.yaml", sets)
    x, _ = next(iter(build_data(cfg).train))
    bench = speed.training_batch(8, x.shape[1], x.shape[-1], torch.device("cpu"))
    assert bench.shape == x.shape and bench.stride() == x.stride()


@pytest.mark.parametrize("change, versions", [("layout", ("old", "new")), ("statistics", ("generic", "native")),
                                             ("cpu_conv", ("channels", "layout")),
                                             ("noise_draw", ("serial", "shared")),
                                             ("sam_ascent", ("temporaries", "in_place")),
                                             ("sam_grads", ("fresh", "into_buffers"))])
def test_kernel_ab_times_both_versions(tmp_path, change, versions):
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "benchmarks/kernel_ab.py", "--change", change, "--models", "small_cnn",
                    "--rounds", "1", "--threads", "1", "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    ratios = json.loads(out.read_text())["small_cnn"]["ratio_to_sgd"]
    assert set(ratios) == {f"{m}_{v}" for m in ("damp", "daap", "sam", "asam") for v in versions}
    assert all(v > 0 for v in ratios.values())


def test_kernel_ab_counts_the_stacking_copies_that_split_convolutions_avoid(tmp_path):
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "benchmarks/kernel_ab.py", "--change", "cpu_conv", "--copies", "--models",
                    "small_cnn", "--threads", "1", "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    counts = json.loads(out.read_text())["small_cnn"]["copied_million_elements"]
    # Channels-last input: the grouped convolution permutes its input and output (clone), the split one
    # concatenates its M outputs instead; SGD does neither.
    assert counts["damp_channels"].get("clone", 0) > 1 and counts["damp_layout"].get("clone", 0) < 0.1
    assert counts["damp_layout"]["cat"] > counts["damp_channels"].get("cat", 0)
    assert counts["sgd"].get("clone", 0) + counts["sgd"].get("cat", 0) < 0.1


def test_noise_draw_times_both_versions_alone_and_after_a_step(tmp_path):
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "benchmarks/noise_draw.py", "--sizes", "4096", "--models", "mlp", "--rounds", "1",
                    "--threads", "2", "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    result = json.loads(out.read_text())
    assert result["draws"]["mlp"]["elements"] == 8 * (784 * 256 + 256 * 256 + 256 * 10)  # kernels only
    for label in ("4096", "mlp"):
        row = result["draws"][label]
        assert set(row["alone_ms"]) == set(row["after_step_ms"]) == {"serial", "shared"}
        assert all(v > 0 for v in row["alone_ms"].values())
    from damp.methods import noise
    assert result["threshold"] == noise.PARALLEL_DRAW_MIN_ELEMENTS
    assert "copies" not in result


def test_noise_draw_copies_row_by_row_equal_damps_copies(tmp_path):
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "benchmarks/noise_draw.py", "--sizes", "", "--models", "small_cnn", "--rounds",
                    "1", "--threads", "1", "--copies", "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    result = json.loads(out.read_text())
    row = result["copies"]["small_cnn"]
    assert row["same_values"] is True and row["elements"] == result["draws"]["small_cnn"]["elements"]
    assert all(row[f"{v}_ms"] > 0 for v in ("draw", "copies", "by_row"))


def test_cpu_compiled_times_every_method_in_both_modes_after_compiling(tmp_path):
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "benchmarks/cpu_compiled.py", "--models", "mlp", "--backend", "eager",
                    "--rounds", "1", "--threads", "1", "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    record = json.loads(out.read_text())["mlp"]
    methods = {"damp", "daap", "sam", "asam"}
    assert set(record["ratio_to_sgd"]) == {"eager", "compiled"}
    assert all(set(r) == methods and all(v > 0 for v in r.values()) for r in record["ratio_to_sgd"].values())
    # Every method's graphs are compiled in its warm-up (two for SAM/ASAM's two passes), none while timed.
    assert {k: v["graphs_while_warming"] for k, v in record["compile"].items()} == \
        {"sgd": 1, "damp": 1, "daap": 1, "sam": 2, "asam": 2}
    assert record["graphs_while_timed"] == 0


def test_profile_step_counts_operators_and_times_both_batches(tmp_path):
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "benchmarks/profile_step.py", "--model", "mlp", "--methods", "sgd,damp",
                    "--steps", "2", "--rounds", "1", "--threads", "1", "--top", "1000", "--out", str(out)],
                   check=True, capture_output=True, cwd=ROOT)  # --top 1000: every operator, whatever its rank
    rows = json.loads(out.read_text())["methods"]
    for row in rows.values():
        assert set(row["ms_per_step"]) == {"batch_128", "batch_8"} and all(v > 0 for v in row["ms_per_step"].values())
        assert row["operator_ms"] > 0 and row["top"]
    # DAMP's step draws M noise rows and runs per-sub-batch kernels: more operator calls than SGD's.
    assert rows["damp"]["operator_calls"] > rows["sgd"]["operator_calls"]
    assert rows["damp"]["top"]["aten::normal_"]["calls"] == 8


def test_kernel_ab_cpu_conv_versions_install_their_kernel(monkeypatch):
    from torch import nn

    from damp.methods.fused_kernels import fused_conv
    from damp.methods.layer_kernels import cpu_conv, kernel_for

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import kernel_ab

    conv = nn.Conv2d(1, 4, 3)
    for version, expected in (("channels", fused_conv), ("layout", cpu_conv)):  # the library's own last
        kernel_ab.CHANGES["cpu_conv"][version]()
        assert kernel_for(conv, "cpu") is expected


def test_kernel_ab_sam_grads_versions_drop_or_keep_the_gradient_buffer(monkeypatch):
    from damp.methods import sam
    from damp.methods.copies import Copies

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import kernel_ab

    values, buffer = torch.zeros(2, 3), torch.zeros(2, 3)
    kernel_ab.CHANGES["sam_grads"]["fresh"]()
    assert sam.Copies(values, grad_buffer=buffer).grad_buffer is None
    kernel_ab.CHANGES["sam_grads"]["into_buffers"]()  # the library's own, restored
    assert sam.Copies is Copies and sam.Copies(values, grad_buffer=buffer).grad_buffer is buffer


def test_fresh_processes_times_both_conditions_in_new_processes(tmp_path):
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "benchmarks/fresh_processes.py", "--model", "mlp", "--after", "small_cnn",
                    "--processes", "1", "--rounds", "1", "--threads", "1", "--out", str(out)],
                   check=True, capture_output=True, cwd=ROOT)
    result = json.loads(out.read_text())
    assert result["after"] == "small_cnn"
    # Each condition ran in a process of its own, and only the "after" one timed the other model first.
    assert [row["after"] for row in result["processes"]["fresh"]] == [None]
    assert [row["after"] for row in result["processes"]["after"]] == ["small_cnn"]
    for rows in result["processes"].values():
        assert set(rows[0]) == {"after", "sgd_ms", "damp_ms", "noise_floor", "damp_ratio", "sam_ratio"}
    assert set(result["summary"]["fresh"]) == {"sgd_ms", "damp_ms", "noise_floor", "damp_ratio", "sam_ratio"}
