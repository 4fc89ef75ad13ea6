"""The demo trains the tuned digits presets (configs/digits_small_cnn) as they are."""

from __future__ import annotations

import pytest

from damp.config import flat_keys, load_config, to_dict
from damp.demo import DEMO_METHODS, PRESET_DIR, DemoSettings, demo_config, run_demo
from tests.conftest import REPO

# What DemoSettings may set; every other key is the preset's.
DEMO_KEYS = {"trainer.epochs", "seed", "eval.corruptions", "eval.severities", "eval.seed"}


def test_the_demo_reads_the_repository_presets():
    assert PRESET_DIR.resolve() == (REPO / "configs" / "digits_small_cnn").resolve()


@pytest.mark.parametrize("name", DEMO_METHODS)
def test_demo_runs_the_tuned_digits_preset(name):
    settings = DemoSettings(epochs=3, seed=4, corruptions=("fog",), severities=(2,))
    demo = flat_keys(to_dict(demo_config(name, settings)))
    preset = flat_keys(to_dict(load_config(REPO / "configs" / "digits_small_cnn" / f"{name}.yaml")))
    assert {key for key in demo if demo[key] != preset[key]} <= DEMO_KEYS
    assert demo["trainer.epochs"] == 3 and demo["seed"] == 4 and demo["eval.corruptions"] == "fog"


def test_an_unknown_method_names_the_presets(tmp_path):
    with pytest.raises(ValueError, match="choose from .*damp.*sgd"):
        run_demo(tmp_path / "out", DemoSettings(methods=("sgd", "nope")))
    assert not (tmp_path / "out").exists()


def test_every_tuned_preset_says_how_it_was_tuned():
    for name in DEMO_METHODS:
        text = (PRESET_DIR / f"{name}.yaml").read_text()
        head = "\n".join(line for line in text.splitlines() if line.startswith("#"))
        assert "hold-out" in head and (name == "sgd" or "damp sweep --config" in head)


def test_the_demo_seed_is_no_preset_tuning_seed(capsys):
    import re

    from damp.cli import main

    for name in DEMO_METHODS:
        for count in re.findall(r"--seeds (\d+)", (PRESET_DIR / f"{name}.yaml").read_text()):
            assert DemoSettings.seed >= int(count), name  # `damp sweep --seeds N` tunes on seeds 0 .. N-1
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert f"(default: {DemoSettings.seed}," in " ".join(capsys.readouterr().out.split())
