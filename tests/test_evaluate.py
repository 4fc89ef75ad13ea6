"""Metrics and the on-the-fly corruption evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from damp.evaluate import evaluate_clean, evaluate_corruptions
from damp.metrics import classification_metrics, summarize


def test_metrics_by_hand():
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]]))
    labels = torch.tensor([0, 1, 1, 1])
    m = classification_metrics(logits, labels, bins=10)
    assert m["error"] == pytest.approx(25.0)
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.8) + math.log(0.7)) / 4, rel=1e-5)
    # Bins: 0.9 -> (0.8, 0.9] correct; 0.6 -> (0.5, 0.6] wrong; 0.8 -> (0.7, 0.8] right; 0.7 -> (0.6, 0.7] right.
    expected_ece = (abs(0.9 - 1) + abs(0.6 - 0) + abs(0.8 - 1) + abs(0.7 - 1)) / 4
    assert m["ece"] == pytest.approx(100 * expected_ece, rel=1e-5)


def test_ece_bins_are_left_open_right_closed():
    """A confidence exactly on a bin edge belongs to the bin below: (0.7, 0.8] holds 0.8."""
    logits = torch.log(torch.tensor([[0.8, 0.2], [0.75, 0.25]]))
    # Both land in (0.7, 0.8]: one bin, mean confidence 0.775, accuracy 1/2 -> ECE 0.275.
    m = classification_metrics(logits, torch.tensor([0, 1]), bins=10)
    assert m["ece"] == pytest.approx(27.5, rel=1e-4)


def test_perfectly_calibrated_confident_model_has_zero_ece():
    logits = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
    m = classification_metrics(logits, torch.tensor([0, 1]))
    assert m["error"] == 0 and m["ece"] < 1e-4


class Threshold(nn.Module):
    """Predicts class 1 when the mean pixel exceeds 0.5: noise-free images are classified exactly."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        score = (x.mean((1, 2, 3)) - 0.5) * 100
        return torch.stack([-score, score], 1) + self.dummy


def test_corruption_evaluation_is_seeded_and_degrades_with_severity():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (64,), generator=gen)
    images = (0.45 + 0.1 * labels.float())[:, None, None, None].expand(64, 1, 8, 8).contiguous()
    model = Threshold()
    assert evaluate_clean(model, images, labels)["error"] == 0
    res = evaluate_corruptions(model, images, labels, ["gaussian_noise"], (1, 5), seed=3,
                               preset="imagenet")
    again = evaluate_corruptions(model, images, labels, ["gaussian_noise"], (1, 5), seed=3,
                                 preset="imagenet")
    assert res == again
    assert res["gaussian_noise"]["5"]["error"] > res["gaussian_noise"]["1"]["error"]
    summary = summarize(res)
    assert summary["severity_error"]["5"] == res["gaussian_noise"]["5"]["error"]
    assert summary["mean_corruption_error"] == pytest.approx(
        (res["gaussian_noise"]["1"]["error"] + res["gaussian_noise"]["5"]["error"]) / 2)


# --- ImageNet-C mCE baselines -------------------------------------------------------------------

def _all_75(error_of):
    from damp.corruptions import names
    return {n: {str(s): {"error": error_of(n)} for s in range(1, 6)} for n in names("common")}


def test_mce_uses_the_canonical_hendrycks_dietterich_alexnet_errors():
    from damp.metrics import ALEXNET_ERRORS, ALEXNET_ERRORS_ROBUSTBENCH_5K, aggregate

    # Hendrycks & Dietterich's AlexNet errors (full 50k sets), not RobustBench's 5k-subset row.
    assert ALEXNET_ERRORS["gaussian_noise"] == 88.6428 and ALEXNET_ERRORS["brightness"] == 56.4592
    assert ALEXNET_ERRORS["jpeg_compression"] == 60.65 and len(ALEXNET_ERRORS) == 15
    assert ALEXNET_ERRORS_ROBUSTBENCH_5K["gaussian_noise"] == 88.16
    # A model exactly as bad as AlexNet has mCE 100 with the canonical table.
    out = aggregate(_all_75(ALEXNET_ERRORS.get), "imagenet")
    assert out["mCE_alexnet"] == pytest.approx(100.0)
    assert "mCE_alexnet_robustbench_5k" not in out
    assert "Hendrycks" in out["protocols"]["mCE_alexnet"]
    rb = aggregate(_all_75(ALEXNET_ERRORS.get), "imagenet", alexnet="robustbench-5k")
    assert "mCE_alexnet" not in rb and rb["mCE_alexnet_robustbench_5k"] != pytest.approx(100.0)
    assert "5000-image" in rb["protocols"]["mCE_alexnet_robustbench_5k"]
    with pytest.raises(ValueError, match="mCE baseline"):
        aggregate({}, "imagenet", alexnet="alexnet")


def test_aggregate_of_no_results_is_empty():
    from damp.metrics import aggregate
    assert aggregate({}, "cifar10") == {}  # callers test `summary` for truth; no half-filled summary


# --- ImageNet-C-bar goes through the clean evaluation preprocessing ---------------------------------

class MeanColour(nn.Module):
    """Per-sample deterministic logits from the mean colour; records the input sizes it sees."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.sizes = set()

    def forward(self, x):
        self.sizes.add(tuple(x.shape[-2:]))
        return self.linear(x.mean((2, 3)))


def test_imagenet_c_bar_uses_the_clean_eval_crop(tmp_path):
    import shutil

    from damp.data.imagenet import FolderDataset, FolderLoader, imagenet_samples
    from damp.streaming import stream_metrics
    from damp.variants import IMAGENET_C_BAR, variant_results
    from tests.fixtures import make_imagenet

    root = make_imagenet(tmp_path / "inet", classes=3, per_class=1, val_per_class=2)  # sizes 40-90 px, mixed
    samples, classes = imagenet_samples(root, "val")
    c_bar = tmp_path / "c_bar"
    for name in IMAGENET_C_BAR:  # IN-C-bar made of the clean images: it must score exactly as clean
        shutil.copytree(root / "val", c_bar / name / "1")
    torch.manual_seed(0)
    model = MeanColour()
    clean_loader = FolderLoader(FolderDataset(samples, 32, "none"), 4, shuffle=False, drop_last=False, num_workers=0)
    clean = stream_metrics(model, clean_loader)
    model.sizes.clear()
    out = variant_results(model, classes, 32, {"c_bar": str(c_bar)}, [1], None)["imagenet_c_bar"]
    assert model.sizes == {(32, 32)}  # resized like the clean val set, not fed at native size
    assert set(out["corruptions"]) == set(IMAGENET_C_BAR)
    for metrics in out["corruptions"].values():
        assert metrics["1"] == pytest.approx(clean, rel=1e-5, abs=1e-5)


# --- check_evaluation_inputs: everything the final evaluation needs, before training ----------------

@pytest.fixture
def no_frost(monkeypatch):
    """No frost textures anywhere (no $DAMP_FROST_DIR, no imagecorruptions package data)."""
    from damp.corruptions import assets
    monkeypatch.delenv(assets.ENV_VAR, raising=False)
    monkeypatch.setattr(assets, "_package_frost_dir", lambda: None)


def _cfg(*overrides):
    from damp.config import load_config
    return load_config(None, list(overrides))


def test_check_evaluation_inputs_frost_and_folder_datasets(tmp_path, no_frost):
    from damp.corruptions.assets import FrostUnavailable
    from damp.evaluate import check_evaluation_inputs

    check_evaluation_inputs(_cfg("eval.corruptions=none", f"data.frost_dir={tmp_path}"))
    check_evaluation_inputs(_cfg("eval.corruptions=fog,contrast", f"data.frost_dir={tmp_path}"))
    for spec in ("frost", "all", "weather"):
        with pytest.raises(FrostUnavailable, match="eval.corruptions includes frost"):
            check_evaluation_inputs(_cfg(f"eval.corruptions={spec}", f"data.frost_dir={tmp_path}"))
    with pytest.raises(ValueError, match="eval.c_dir"):  # ImageNet has no in-memory test set to corrupt
        check_evaluation_inputs(_cfg("data.name=imagenet", "eval.corruptions=fog"))


def test_check_evaluation_inputs_released_files(tmp_path, no_frost):
    import json

    import numpy as np

    from damp.evaluate import check_evaluation_inputs

    npy = tmp_path / "npy"
    npy.mkdir()
    np.save(npy / "fog.npy", np.zeros((4, 8, 8, 3), np.uint8))
    np.save(npy / "labels.npy", np.zeros(4, np.uint8))
    (npy / "meta.json").write_text(json.dumps({"severities": [1, 5]}))
    # frost from released files needs no textures
    (tmp_path / "folders" / "frost" / "2" / "n0").mkdir(parents=True)
    check_evaluation_inputs(_cfg("eval.corruptions=fog", "eval.severities=[1,5]", f"eval.c_dir={npy}"))
    check_evaluation_inputs(_cfg("eval.corruptions=frost", "eval.severities=[2]", f"eval.c_dir={tmp_path / 'folders'}"))
    cases = [(["eval.corruptions=fog", "eval.severities=[1,3]", f"eval.c_dir={npy}"], "fog/3"),
             (["eval.corruptions=fog,snow", "eval.severities=[1]", f"eval.c_dir={npy}"], "snow/1"),
             (["eval.corruptions=frost", "eval.severities=[2,4]", f"eval.c_dir={tmp_path / 'folders'}"], "frost/4"),
             (["eval.corruptions=fog", f"eval.c_dir={tmp_path / 'nope'}"], "not a directory")]
    for overrides, text in cases:
        with pytest.raises(FileNotFoundError, match=text):
            check_evaluation_inputs(_cfg(*overrides))
    (npy / "labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match="fog/1"):
        check_evaluation_inputs(_cfg("eval.corruptions=fog", "eval.severities=[1]", f"eval.c_dir={npy}"))


def test_check_evaluation_inputs_imagenet_variants(tmp_path):
    from damp.evaluate import check_evaluation_inputs
    from damp.variants import IMAGENET_C_BAR

    inet = _cfg("data.name=imagenet", "eval.severities=[1]")
    (tmp_path / "a" / "n0").mkdir(parents=True)
    check_evaluation_inputs(inet, {"a": str(tmp_path / "a")})
    with pytest.raises(ValueError, match="ImageNet-trained"):
        check_evaluation_inputs(_cfg(), {"a": str(tmp_path / "a")})
    with pytest.raises(FileNotFoundError, match="--imagenet-sketch"):
        check_evaluation_inputs(inet, {"sketch": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="--imagenet-d-map"):
        check_evaluation_inputs(inet, {"d": str(tmp_path / "a")})
    with pytest.raises(FileNotFoundError, match="--imagenet-d-map"):
        check_evaluation_inputs(inet, {"d": str(tmp_path / "a")}, str(tmp_path / "map.json"))
    for name in IMAGENET_C_BAR[:-1]:
        (tmp_path / "cbar" / name / "1").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"--imagenet-c-bar: .*{IMAGENET_C_BAR[-1]}/1"):
        check_evaluation_inputs(inet, {"c_bar": str(tmp_path / "cbar")})
    (tmp_path / "cbar" / IMAGENET_C_BAR[-1] / "1").mkdir(parents=True)
    check_evaluation_inputs(inet, {"c_bar": str(tmp_path / "cbar")})
