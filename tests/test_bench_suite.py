"""benchmarks/gpu_suite.sh: the reduced CPU run end to end, and its one-line refusals."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from damp import corruptions
from tests.conftest import FROST_DIR, REPO

SCRIPT = REPO / "benchmarks" / "gpu_suite.sh"
_SPEC = importlib.util.spec_from_file_location("gpu_measure", REPO / "benchmarks" / "gpu_measure.py")
gpu_measure = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gpu_measure)
PART_FILES = ("environment", "step_time_resnet18", "step_time_resnet50", "throughput", "corruptions",
              "cifar10c", "targets")


# A hang guard, not a speed check: the reduced CPU run takes 2-5 minutes, longer on a shared machine.
def suite(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "out"
    # Without the textures frost is listed as unavailable, which the checks below accept.
    frost = ["--frost-dir", str(FROST_DIR)] if FROST_DIR.is_dir() else []
    proc = suite("--device", "cpu", "--out", str(out), *frost)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_cpu_run_writes_one_json_per_part_and_the_combined_results(cpu_run):
    out, results = cpu_run
    for name in PART_FILES:
        assert (out / f"{name}.json").is_file(), name
    assert json.loads((out / "cifar10c.json").read_text()) == json.loads(json.dumps(results["cifar10c"]))
    assert json.loads((out / "targets.json").read_text()) == results["targets"]
    summary = (out / "summary.md").read_text()
    assert "## Targets" in summary and "## Step time against SGD" in summary and "CIFAR-10-C" in summary
    env = results["environment"]
    assert env["device"] == "cpu" and env["gpu"] is None and env["torch"] == torch.__version__
    assert {"cuda", "cudnn", "damp", "date", "git_commit"} <= set(env)


@pytest.mark.parametrize("model", ["resnet18", "resnet50"])
def test_step_times_cover_every_method_and_executor(cpu_run, model):
    out, results = cpu_run
    eager = results["step_time"][model]["eager"]
    # the small models run the CPU plan only
    names = gpu_measure.variant_names() if model == "resnet18" else gpu_measure.variant_names(("split",))
    assert set(eager["seconds_per_step"]) == set(names)
    assert all(s > 0 for s in eager["seconds_per_step"].values())
    assert set(eager["ratio_to_sgd"]) == set(names) - {"sgd"}
    assert eager["auto_executor"] == "cpu" and eager["precision"] == "fp32"
    assert eager["num_perturbations"] == 8
    compiled = results["step_time"][model]["compiled"]
    if model == "resnet50":  # the CPU plan compiles ResNet18 only
        assert "skipped" in compiled
        return
    assert set(compiled["variants"]) == {"sgd", "damp_split"}
    for name, row in compiled["variants"].items():  # measured, or a recorded failure / skip: never missing
        assert "seconds_per_step" in row or "error" in row or "skipped" in row, (name, row)
    assert "not attempted" in results["cuda_graphs"]
    assert "not attempted" in json.loads((out / f"step_time_{model}.json").read_text())["cuda_graphs"]


def test_throughput_corruptions_and_cifar10c(cpu_run):
    _, results = cpu_run
    rates = results["throughput"]["eager"]["images_per_s"]
    assert set(rates) == {"16"} and set(rates["16"]) == {"sgd", "damp"}
    cifar = results["corruptions"]["presets"]["cifar"]
    assert set(cifar["corruptions"]) | set(cifar["unavailable"]) == set(corruptions.names())
    assert all(row["images_per_s"] > 0 for row in cifar["corruptions"].values())
    c10c = results["cifar10c"]
    assert c10c["extrapolated"] and c10c["generation_s"] > 0 and c10c["inference_s"] > 0
    assert set(c10c["corruptions"]) | set(c10c["unavailable"]) == set(corruptions.names())
    assert set(c10c["cpu_fallbacks"]) == {"jpeg_compression"}


def test_every_target_is_reported_and_does_not_apply_off_cuda(cpu_run):
    _, results = cpu_run
    expected = {f"{m}:{k}/sgd" for m in ("resnet18", "resnet50") for k in gpu_measure.RATIO_TARGETS}
    expected |= {"resnet18:sgd_images_per_s", "cifar10c:generation_over_inference"}
    assert set(results["targets"]) == expected
    for row in results["targets"].values():
        assert row["applies"] is False and isinstance(row["met"], bool) and row["value"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_exits_2_with_one_line(tmp_path):
    proc = suite("--device", "cuda", "--out", str(tmp_path / "out"), timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "no CUDA device" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_non_empty_out_is_refused_with_one_line(tmp_path):
    (tmp_path / "old.json").write_text("{}")
    proc = suite("--device", "cpu", "--out", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture
def gpu_suite(monkeypatch):
    """benchmarks/gpu_suite.py as a module (it imports gpu_measure as a sibling)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_suite", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_models_and_executors_narrow_the_plan_eager_and_compiled(gpu_suite):
    plan = gpu_suite.narrowed(gpu_suite.PLANS["cuda"], "resnet50", "fused,split")
    assert list(plan.models) == ["resnet50"] and plan.models["resnet50"]["executors"] == ("fused", "split")
    assert plan.compile_variants == {"resnet50": ("sgd", "damp_fused", "sam_fused", "daap_fused",
                                                  "asam_fused")}
    only_split = gpu_suite.narrowed(gpu_suite.PLANS["cuda"], None, "split")
    assert only_split.compile_variants["resnet18"] == ("sgd", "damp_split", "sam_split")
    assert only_split.compile_variants["resnet50"] == ()  # SGD alone would compile for nothing
    with pytest.raises(ValueError, match="resnet50 runs only split"):
        gpu_suite.narrowed(gpu_suite.PLANS["cpu"], None, "fused")
    assert gpu_suite.narrowed(gpu_suite.PLANS["cuda"], None, None) == gpu_suite.PLANS["cuda"]
    with pytest.raises(ValueError, match="resnet34"):
        gpu_suite.narrowed(gpu_suite.PLANS["cuda"], "resnet34", None)
    with pytest.raises(ValueError, match="fast"):
        gpu_suite.narrowed(gpu_suite.PLANS["cuda"], None, "fused,fast")


def test_an_unknown_model_is_refused_with_one_line_and_nothing_written(tmp_path):
    proc = suite("--device", "cpu", "--out", str(tmp_path / "out"), "--models", "resnet34", timeout=60)
    assert proc.returncode == 2 and "resnet34" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


PROFILE = REPO / "benchmarks" / "gpu_profile.py"


def test_profile_reports_wall_time_and_costliest_operators_per_variant(tmp_path):
    out = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, str(PROFILE), "--device", "cpu", "--batch", "8", "--warmup", "1",
                           "--steps", "1", "--variants", "sgd,damp_split", "--out", str(out),
                           "--batchnorm-kernels", "generic"],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {"sgd", "damp_split"} and result["batchnorm_kernels"] == "generic"
    for row in result["variants"].values():
        assert row["wall_ms"] > 0 and row["kernel_ms"] is None and row["top"]
        assert all(r["ms"] >= 0 and r["calls"] > 0 for r in row["top"])
    # At batch 8, drawing ResNet18's 8 x 11 M noise values is among DAMP's costliest operators: one call a
    # row. With 2 threads the rows are shared, and the profiler sees the calling thread's 4 rows only.
    calls = {r["op"]: r["calls"] for r in result["variants"]["damp_split"]["top"]}
    assert calls.get("aten::normal_") == 4
    assert "aten::normal_" not in {r["op"] for r in result["variants"]["sgd"]["top"]}
    assert "sgd: wall" in proc.stdout and "damp_split: wall" in proc.stdout


def test_profile_refuses_an_unknown_variant_with_one_line():
    proc = subprocess.run([sys.executable, str(PROFILE), "--device", "cpu", "--variants", "sgd,damp_turbo"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 2 and "damp_turbo" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
