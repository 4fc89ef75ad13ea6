"""Bring your own model: models damp does not ship (tests/user_models.py) through every method,
`damp train` with ``model.name: module:factory``, `damp evaluate` (run and --model) and ``damp.benchmark``."""

from __future__ import annotations

import json

import pytest
import torch

import damp
from damp import methods
from damp.cli import main
from damp.config import ConfigError, load_config
from damp.train import train
from tests import user_models
from tests.methods.test_subbatch import NOISY, ZERO, grads

FACTORIES = user_models.FACTORIES
WITH_BATCHNORM = {"depthwise_separable", "biased", "torchvision_resnet"}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(user_models, name)(num_classes=5, in_channels=3).double()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.rand(8, 3, 16, 16, generator=gen, dtype=torch.float64), torch.randint(0, 5, (8,), generator=gen)


@pytest.mark.parametrize("method", list(ZERO))
@pytest.mark.parametrize("factory", FACTORIES)
def test_zero_perturbation_is_sgd_on_user_models(factory, method):
    """sigma = 0 / rho = 0 with the default executor gives SGD's gradient: nothing in the model (depthwise
    groups, GroupNorm/LayerNorm, attention, biases, torchvision blocks) is handled differently."""
    model, (x, y) = build(factory), batch()
    _, sgd = grads(model, methods.SGD(), x, y)
    _, zero = grads(model, methods.build(method, num_perturbations=4, **ZERO[method]), x, y)
    for a, b in zip(zero, sgd):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", list(NOISY))
@pytest.mark.parametrize("factory", FACTORIES)
def test_executors_agree_on_user_models(factory, method):
    """With noise, the fused executor (what it can fuse; the rest per sub-batch) equals the split one, and
    without BatchNorm both equal the reference loop of M whole passes; the noise changes the gradient."""
    model, (x, y) = build(factory), batch()
    executors = ("split", "fused") + (() if factory in WITH_BATCHNORM else ("loop", "auto"))
    if factory == "patch_attention" and method in ("sam", "asam"):
        # SAM perturbs every parameter, the class token too, which the transformer module itself reads:
        # a per-layer executor cannot run it per sub-batch, and says so rather than dropping its noise.
        for executor in ("split", "fused"):
            with pytest.raises(ValueError, match="parameter cls belongs to a module with children"):
                grads(model, methods.build(method, num_perturbations=4, executor=executor, **NOISY[method]), x, y)
        executors = ("loop", "auto")  # auto picks the loop here, on every device
    run = {ex: grads(model, methods.build(method, num_perturbations=4, executor=ex, **NOISY[method]), x, y)
           for ex in executors}
    reference = run.pop("loop") if "loop" in run else run["split"]
    for loss, per_layer in run.values():
        torch.testing.assert_close(loss, reference[0])
        for a, b in zip(per_layer, reference[1]):
            torch.testing.assert_close(a, b)
    _, sgd = grads(model, methods.SGD(), x, y)
    assert any(not torch.allclose(a, b) for a, b in zip(reference[1], sgd))


QUICK = ["data.name=digits", "data.batch_size=32", "data.max_train_images=64", "trainer.max_steps=2",
         "trainer.device=cpu", "trainer.progress=false", "trainer.log_every=1", "trainer.checkpoint_every=2",
         "eval.corruptions=gaussian_noise,contrast", "eval.severities=[1,5]", "eval.fgsm=[0.01]"]
TRAIN_METHODS = {"sgd": [], "damp": ["method.name=damp", "method.std=0.2", "method.num_perturbations=4"],
                 "daap": ["method.name=daap", "method.std=0.02", "method.num_perturbations=4"],
                 "sam": ["method.name=sam", "method.rho=0.05", "method.num_perturbations=2"],
                 "asam": ["method.name=asam", "method.rho=1.0", "method.num_perturbations=2"]}


@pytest.mark.parametrize("method", TRAIN_METHODS)
@pytest.mark.parametrize("factory", FACTORIES)
def test_user_model_trains_and_evaluates_by_cli_and_api(factory, method, tmp_path, capsys):
    path = f"tests.user_models:{factory}"
    cfg = load_config(None, [*QUICK, f"model.name={path}", *TRAIN_METHODS[method]])
    run = tmp_path / "run"
    results = train(cfg, run)
    assert results["meta"]["steps"] == 2 and set(results["corruptions"]) == {"gaussian_noise", "contrast"}
    state = torch.load(run / "last.pt", weights_only=False)
    assert state["config"]["model"]["name"] == path  # the checkpoint records the factory
    # `damp evaluate RUN` rebuilds the model from the recorded factory
    assert main(["evaluate", str(run), "--quiet"]) == 0
    assert json.loads((run / "evaluation.json").read_text())["clean"] == results["clean"]
    # `damp evaluate --model` on the trained weights equals the Python API to the last digit
    out = tmp_path / "cli.json"
    assert main(["evaluate", "--model", path, "--weights", str(run / "last.pt"), "--data", "digits",
                 "--corruptions", "gaussian_noise,contrast", "--severities", "1,5", "--fgsm", "0.01",
                 "--out", str(out), "--quiet"]) == 0
    cli = json.loads(out.read_text())
    model = getattr(user_models, factory)(num_classes=10, in_channels=1)
    model.load_state_dict(state["model"])
    api = damp.benchmark(model, *_digits_test(), preset="cifar",
                         corruptions=["gaussian_noise", "contrast"], severities=(1, 5), fgsm=(0.01,))
    assert cli["clean"] == api["clean"] and cli["corruptions"] == api["corruptions"] and cli["fgsm"] == api["fgsm"]
    assert cli["summary"] == api["summary"] and set(cli) == set(results)
    # ... and equals the trainer's own evaluation of the same weights up to float summation order
    assert cli["clean"]["error"] == pytest.approx(results["clean"]["error"])
    trained = results["corruptions"]["contrast"]["5"]["error"]
    assert cli["corruptions"]["contrast"]["5"]["error"] == pytest.approx(trained)


def test_normalize_wraps_the_model_and_checkpoints_keep_its_weights(tmp_path):
    cfg = load_config(None, [*QUICK, "model.name=tests.user_models:biased", "model.normalize=true",
                             "model.kwargs={width: 4}", "eval.corruptions=none", "eval.fgsm=[]"])
    train(cfg, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert all(k.startswith("model.") for k in state["model"])  # Normalized(model): mean/std not saved
    assert state["model"]["model.0.weight"].shape[0] == 4
    assert main(["evaluate", str(tmp_path / "run"), "--quiet"]) == 0


@pytest.mark.parametrize("overrides,message", [
    (["model.name=tests.user_models:nope"], "has no 'nope'"),
    (["model.name=no_such_module_xyz:f"], "no module 'no_such_module_xyz'"),
    (["model.name=tests.user_models:biased", "model.dropout=0.1"], "model.dropout: not used"),
    (["model.normalize=true"], "model.normalize: only for module:factory"),
    (["model.name=tests.user_models:biased", "model.kwargs=[1]"], "model.kwargs: expected a mapping"),
])
def test_bad_factory_configs_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_evaluate_model_errors_are_one_line_exit_2(tmp_path, capsys):
    torch.save({"state_dict": {"0.weight": torch.zeros(1)}}, tmp_path / "bad.pt")
    cases = [(["--model", "no_such_module_xyz:f", "--data", "digits"], "no module"),
             (["--model", "tests.user_models:nope", "--data", "digits"], "has no 'nope'"),
             (["--model", "tests.user_models:biased", "--data", "digits", "--weights", str(tmp_path / "x.pt")],
              "not found"),
             (["--model", "tests.user_models:biased", "--data", "digits", "--weights", str(tmp_path / "bad.pt")],
              "does not fit the model"),
             (["--model", "tests.user_models:biased"], "needs --data")]
    for args, message in cases:
        assert main(["evaluate", *args, "--out", str(tmp_path / "o.json"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


def test_weights_prefixes_from_ddp_and_compile_are_stripped(tmp_path):
    model = user_models.biased(num_classes=10, in_channels=1)
    state = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model": state}, tmp_path / "w.pt")
    out = tmp_path / "e.json"
    assert main(["evaluate", "--model", "tests.user_models:biased", "--weights", str(tmp_path / "w.pt"),
                 "--data", "digits", "--corruptions", "none", "--out", str(out), "--quiet"]) == 0
    api = damp.benchmark(model, *_digits_test(), corruptions="none")
    assert json.loads(out.read_text())["clean"] == api["clean"]


def _digits_test():
    from damp.data import load_array_dataset
    data = load_array_dataset("digits")
    return data.test_images, data.test_labels


def test_benchmark_accepts_batches_of_any_size_and_checks_inputs():
    model = user_models.group_layer_norm(num_classes=10, in_channels=1)
    images, labels = _digits_test()
    kw = {"corruptions": ["gaussian_noise", "zoom_blur"], "severities": (2, 5), "fgsm": (0.01,)}
    whole = damp.benchmark(model, images, labels, **kw)
    pieces = damp.benchmark(model, ((images[i:i + 37], labels[i:i + 37]) for i in range(0, len(labels), 37)), **kw)
    assert whole == pieces and whole["meta"]["images"] == len(labels)
    floats = damp.benchmark(model, images.float() / 255, labels, corruptions="none")
    assert floats["clean"] == pytest.approx(whole["clean"])
    with pytest.raises(ValueError, match="preset"):
        damp.benchmark(model, images, labels, preset="imagenet")
    with pytest.raises(ValueError, match="labels"):
        damp.benchmark(model, images, labels[:-1])
    with pytest.raises(ValueError, match="images"):
        damp.benchmark(model, images[:, 0], labels)


def test_bench_reports_benchmark_throughput_for_a_user_model(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "tests.user_models:depthwise_separable", "--images", "40", "--channels", "1",
                 "--corruptions", "gaussian_noise,contrast,zoom_blur", "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["variants"] == 15 and row["images"] == 40 and row["inference_s"] > 0 and row["generation_s"] > 0
    assert row["images_x_variants_per_s"] == pytest.approx(600 / (row["generation_s"] + row["inference_s"]))
    assert "images x variants / s" in capsys.readouterr().out


def test_review_fixes_for_foreign_models(tmp_path, monkeypatch, capsys):
    """Normalised runs reload through --weights; import failures, directories and bad pixels are one line;
    a failed build leaves the run directory empty; frost named alone must be available."""
    sets = [*QUICK, "model.name=tests.user_models:biased", "model.normalize=true", "model.kwargs={width: 4}",
            "eval.corruptions=none", "eval.fgsm=[]"]
    results = train(load_config(None, sets), tmp_path / "run")
    out = tmp_path / "e.json"
    assert main(["evaluate", "--model", "tests.user_models:biased", "--set", "model.normalize=true",
                 "--set", "model.kwargs={width: 4}", "--weights", str(tmp_path / "run" / "last.pt"),
                 "--data", "digits", "--corruptions", "none", "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["clean"]["error"] == pytest.approx(results["clean"]["error"])
    (tmp_path / "broken_models.py").write_text("def build(:\n")
    (tmp_path / "raising_models.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module, message in (("broken_models", "SyntaxError"), ("raising_models", "RuntimeError: no GPU here")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, [f"model.name={module}:build"])
    assert main(["evaluate", "--model", "tests.user_models:biased", "--data", "digits", "--weights",
                 str(tmp_path / "run"), "--out", str(out), "--overwrite", "--quiet"]) == 2
    assert "is a directory" in capsys.readouterr().err
    (tmp_path / "bad_factory.py").write_text("def build(num_classes, in_channels):\n    raise ValueError('nope')\n")
    with pytest.raises(ValueError, match="nope"):
        train(load_config(None, [*QUICK, "model.name=bad_factory:build"]), tmp_path / "failed")
    assert not (tmp_path / "failed").exists() or not any((tmp_path / "failed").iterdir())
    model = user_models.biased(num_classes=10, in_channels=1)
    images, labels = _digits_test()
    with pytest.raises(ValueError, match=r"float pixels must be in \[0, 1\]"):
        damp.benchmark(model, images.float(), labels, corruptions="none")
    (tmp_path / "no_textures").mkdir()
    with pytest.raises(ValueError, match="frost"):
        damp.benchmark(model, images, labels, corruptions=["frost"], frost_dir=str(tmp_path / "no_textures"))
