"""Config presets: composition by `extends:`, and the presets of one setup agree outside the method."""

from __future__ import annotations

from pathlib import Path

import pytest

from damp.config import ConfigError, load_config, read_preset, to_dict
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


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.mark.parametrize("setup", ["fashion_mnist_resnet8"])  # the presets written as diffs (extends:)
def test_presets_of_one_setup_differ_only_in_the_method(setup):
    directory = Path(REPO) / "configs" / setup
    base = _flat(to_dict(load_config(directory / "sgd.yaml")))
    for preset in sorted(directory.glob("*.yaml")):
        values = _flat(to_dict(load_config(preset)))
        differing = {k for k in base if values[k] != base[k]}
        allowed = {k for k in base if k.startswith(("method.", "data.augmix"))} | {"model.dropout"}
        assert differing <= allowed, (preset.name, differing)
