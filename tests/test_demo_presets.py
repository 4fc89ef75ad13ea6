"""The demo trains exactly what the tuned digits presets (configs/digits_small_cnn) say."""

from __future__ import annotations

import pytest

from damp.config import load_config
from damp.demo import DEMO_METHODS, DemoSettings, demo_config
from tests.conftest import REPO


@pytest.mark.parametrize("name", DEMO_METHODS)
def test_demo_runs_the_tuned_digits_preset(name):
    demo = demo_config(name, DemoSettings())
    preset = load_config(REPO / "configs" / "digits_small_cnn" / f"{name}.yaml")
    assert demo.method == preset.method and demo.model == preset.model and demo.optim == preset.optim
    assert demo.data == preset.data and demo.trainer.epochs == preset.trainer.epochs


def test_every_tuned_preset_says_how_it_was_tuned():
    for name in DEMO_METHODS:
        text = (REPO / "configs" / "digits_small_cnn" / f"{name}.yaml").read_text()
        head = "\n".join(line for line in text.splitlines() if line.startswith("#"))
        assert "hold-out" in head and (name == "sgd" or "damp sweep --config" in head)
