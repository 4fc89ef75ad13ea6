"""`damp probe`: the Theorem-1 ratio on a model where it is known in closed form, and the command."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from damp.probe import probe, probed_layers, ratio_statistics


def test_a_brightness_like_scaling_is_the_multiplicative_perturbation_c_at_every_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False)).double()
    images = torch.rand(16, 3, 2, 2, dtype=torch.float64)
    scale = {1: 0.9, 2: 0.7}  # g(x) = c x: for a bias-free ReLU net every layer input scales by c
    results = probe(model, images, {"scale": lambda x, s: scale[s] * x}, [1, 2])
    assert list(results) == ["1", "3"] == list(probed_layers(model))
    for layer in results.values():
        for severity, c in scale.items():
            stats = layer["scale"][str(severity)]
            assert stats["std"] < 1e-12 and abs(stats["robust_std"]) < 1e-12
            assert all(v == pytest.approx(c) for v in stats["quantiles"].values())


def test_additive_noise_gives_the_ratio_one_plus_eps_over_x():
    clean = torch.full((10000,), 2.0)
    eps = torch.randn(10000, generator=torch.Generator().manual_seed(0)) * 0.2
    stats = ratio_statistics(clean, clean + eps)
    assert stats["used"] == 1.0 and stats["std"] == pytest.approx(0.1, rel=0.05)  # std(eps / x) = 0.2 / 2
    assert stats["quantiles"]["q50"] == pytest.approx(1.0, abs=0.01)
    zeros = ratio_statistics(torch.zeros(4), torch.ones(4))  # no defined ratio anywhere
    assert zeros["used"] == 0.0 and zeros["std"] is None


def test_probe_command_on_a_trained_run(tmp_path, capsys):
    from damp.cli import main

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--set", "trainer.max_steps=2", "--set", "trainer.progress=false",
                 "--set", "method.name=damp", "--set", "method.std=0.2", "--set", "method.num_perturbations=2",
                 "--set", "eval.corruptions=none"]) == 0
    assert main(["probe", str(run), "--corruptions", "gaussian_noise,contrast", "--severities", "1,5", "--images",
                 "32", "--figure", str(tmp_path / "probe.png")]) == 0
    saved = json.loads((run / "probe.json").read_text())
    assert saved["sigma"] == 0.2 and saved["images"] == 32
    first = next(iter(saved["layers"].values()))
    noise = first["gaussian_noise"]
    assert noise["5"]["robust_std"] > noise["1"]["robust_std"] > 0  # stronger noise, larger xi spread
    assert (tmp_path / "probe.png").is_file() and "σ = 0.2" in capsys.readouterr().out
    (run / "probe.json").unlink()  # a checkpoint file as the target writes beside it, as evaluate does
    assert main(["probe", str(run / "last.pt"), "--corruptions", "contrast", "--severities", "1", "--images", "8"]) == 0
    assert json.loads((run / "probe.json").read_text())["images"] == 8
