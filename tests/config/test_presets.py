"""Config presets: composition by `extends:`, and the presets of one setup agree outside the method."""

from __future__ import annotations

from pathlib import Path

import pytest

from damp.config import ConfigError, flat_keys, load_config, read_preset, to_dict
from tests.conftest import REPO


def test_extends_merges_sections_key_by_key(tmp_path):
    (tmp_path / "base.yaml").write_text("data:\n  name: digits\n  batch_size: 64\nmethod:\n  name: sgd\nseed: 3\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("extends: ../base.yaml\nmethod:\n  name: damp\n  std: 0.2\n")
    values = read_preset(tmp_path / "sub" / "child.yaml")
    assert values == {"data": {"name": "digits", "batch_size": 64}, "method": {"name": "damp", "std": 0.2}, "seed": 3}
    cfg = load_config(tmp_path / "sub" / "child.yaml", ["data.batch_size=32"])
    assert cfg.data.batch_size == 32 and cfg.method.std == 0.2 and cfg.seed == 3


def test_extends_refuses_cycles_and_missing_parents(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_config(tmp_path / "c.yaml")


SETUPS = sorted(p.name for p in (Path(REPO) / "configs").iterdir() if (p / "sgd.yaml").is_file())
# What an arm may change besides method:, beyond the method's own keys: the Dropout arm its rate, the
# single-corruption arms (paper Algorithm 2) and the AugMix arms their data keys, and SAM/ASAM on ViT
# their epochs (fewer than SGD's, as in the paper's Table 3, since each of their epochs costs two).
ARM_KEYS = ("model.dropout", "data.train_corruption", "data.augmix")


@pytest.mark.parametrize("setup", SETUPS)
def test_presets_of_one_setup_differ_only_in_the_method(setup):
    directory = Path(REPO) / "configs" / setup
    base = flat_keys(to_dict(load_config(directory / "sgd.yaml")))
    assert len(SETUPS) >= 10 and len(list(directory.glob("*.yaml"))) >= 4
    for preset in sorted(directory.glob("*.yaml")):
        assert preset.name == "sgd.yaml" or "\nextends: " in preset.read_text(), preset  # a diff
        values = flat_keys(to_dict(load_config(preset)))
        differing = {k for k in base if values[k] != base[k]}
        allowed = {k for k in base if k.startswith(("method.", *ARM_KEYS))}
        if setup.startswith("imagenet_vit") and preset.stem in ("sam", "asam"):
            allowed.add("trainer.epochs")
        assert differing <= allowed, (preset.name, differing)
