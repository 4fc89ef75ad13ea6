"""The CLI refuses, in one line with exit code 2 and before writing anything, what would only fail later:
missing evaluation inputs, non-finite hyperparameters and CUDA on a machine without it."""

from __future__ import annotations

import pytest
import torch

from damp.cli import main

QUICK = ["--set", "trainer.progress=false", "--set", "trainer.max_steps=1"]


@pytest.fixture
def no_frost(monkeypatch):
    from damp.corruptions import assets
    monkeypatch.delenv(assets.ENV_VAR, raising=False)
    monkeypatch.setattr(assets, "_package_frost_dir", lambda: None)


def refused(argv: list[str], capsys) -> str:
    """Run the CLI; assert exit 2 and a one-line error without a traceback; return the line."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("overrides,expected", [
    (["eval.corruptions=frost"], "frost textures"),
    (["eval.corruptions=all"], "includes frost"),
    (["eval.corruptions=fog", "eval.c_dir={tmp}/no_such_dir"], "eval.c_dir"),
    (["eval.corruptions=fog,snow", "eval.severities=[2]", "eval.c_dir={tmp}/c"], "snow/2"),
    (["data.name=imagenet", "data.root={tmp}", "eval.corruptions=fog"], "need released -C folders"),
], ids=["frost", "frost via all", "no c_dir", "c_dir lacks a corruption", "imagenet on the fly"])
def test_train_fails_fast_on_missing_evaluation_inputs(overrides, expected, tmp_path, capsys, no_frost):
    (tmp_path / "c" / "fog" / "2" / "n0").mkdir(parents=True)
    (tmp_path / "empty_frost").mkdir()
    sets = [a for o in overrides + [f"data.frost_dir={tmp_path / 'empty_frost'}"]
            for a in ("--set", o.format(tmp=tmp_path))]
    out = tmp_path / "run"
    err = refused(["train", *QUICK, *sets, "--out", str(out)], capsys)
    assert expected in err
    assert not out.exists()  # nothing written, nothing trained


@pytest.mark.parametrize("override", [
    "optim.lr=inf", "optim.lr=.inf", "optim.lr=nan", "optim.weight_decay=-.inf", "optim.momentum=nan",
    "optim.eps=inf", "optim.betas=[0.9, .nan]", "data.mixup=nan", "model.dropout=nan", "eval.fgsm=[inf]",
    "optim.warmup_epochs=inf", "method.std=nan", "method.rho=inf", "method.eta=nan",
])
def test_non_finite_hyperparameters_are_refused(override, tmp_path, capsys):
    method = {"method.std": ["method.name=damp"], "method.rho": ["method.name=sam"],
              "method.eta": ["method.name=asam", "method.rho=1.0"]}.get(override.split("=")[0], [])
    sets = [a for o in method + [override] for a in ("--set", o)]
    err = refused(["train", *QUICK, *sets, "--out", str(tmp_path / "run")], capsys)
    key = override.split("=")[0]
    assert f"{key}: must be a finite number" in err
    assert not (tmp_path / "run").exists()


def test_mrwp_mix_above_one_names_its_key(tmp_path, capsys):
    err = refused(["train", *QUICK, "--set", "method.name=mrwp", "--set", "method.std=0.01", "--set", "method.mix=1.5",
                   "--out", str(tmp_path / "run")], capsys)
    assert "method.mix: must be in [0, 1], got 1.5" in err and not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("argv", [
    ["bench", "--device", "cuda", "--quick", "--out", "{tmp}/bench.json"],
    ["train", *QUICK, "--set", "trainer.device=cuda", "--out", "{tmp}/run"],
    ["evaluate", "{tmp}/run", "--device", "cuda", "--out", "{tmp}/e.json"],
    ["corrupt", "--data", "digits", "--device", "cuda:0", "--out", "{tmp}/c", "--quiet"],
], ids=["bench", "train", "evaluate", "corrupt"])
def test_cuda_on_a_cpu_machine_is_one_line(argv, tmp_path, capsys):
    err = refused([a.format(tmp=tmp_path) for a in argv], capsys)
    assert "no CUDA device" in err
    assert list(tmp_path.iterdir()) == []


def test_unknown_device_is_one_line(tmp_path, capsys):
    assert "not a device" in refused(["bench", "--device", "tpu", "--out", str(tmp_path / "b.json")], capsys)
