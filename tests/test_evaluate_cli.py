"""`damp evaluate` and `damp report` on runs from `damp train`: schema, sources, aggregates, figures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from damp.cli import main
from damp.config import load_config
from damp.evaluate import evaluate_saved_run
from damp.streaming import fgsm_error
from damp.metrics import aggregate
from damp.variants import evaluate_variant
from damp.train import train
from tests.fixtures import make_imagenet

QUICK = ["trainer.device=cpu", "trainer.progress=false", "data.batch_size=32", "trainer.max_steps=4",
         "eval.corruptions=none", "data.max_train_images=128"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, extra in {"sgd": ["method.name=sgd"], "damp": ["method.name=damp", "method.std=0.2",
                                                            "method.num_perturbations=4"],
                        "daap": ["method.name=daap", "method.std=0.02", "method.num_perturbations=4"]}.items():
        for seed in (0, 1):
            train(load_config(None, QUICK + extra + [f"seed={seed}"]), root / f"{name}-{seed}")
        out[name] = [root / f"{name}-0", root / f"{name}-1"]
    return out


def test_results_schema_and_sources_agree(runs, tmp_path):
    run = runs["damp"][0]
    assert main(["evaluate", str(run), "--corruptions", "gaussian_noise,pixelate", "--severities", "1,2,3,4,5",
                 "--fgsm", "0.01", "--quiet"]) == 0
    fly = json.loads((run / "evaluation.json").read_text())
    assert set(fly) == {"clean", "corruptions", "summary", "fgsm", "variants", "meta"}
    assert set(fly["clean"]) == {"error", "nll", "ece"}
    assert set(fly["corruptions"]["pixelate"]) == {"1", "2", "3", "4", "5"}
    assert set(fly["corruptions"]["pixelate"]["3"]) == {"error", "nll", "ece"}
    assert set(fly["summary"]["severity_error"]) == {"1", "2", "3", "4", "5"}
    assert fly["fgsm"][0]["eps"] == 0.01 and 0 <= fly["fgsm"][0]["error"] <= 100
    assert "on the fly" in fly["meta"]["corruption_source"]
    assert main(["corrupt", "--data", "digits", "--out", str(tmp_path / "c"),
                 "--corruptions", "gaussian_noise,pixelate", "--quiet"]) == 0
    files = evaluate_saved_run(str(run), corruptions="gaussian_noise,pixelate", severities=[1, 2, 3, 4, 5],
                               c_dir=str(tmp_path / "c"))
    # Same images: identical predictions; metrics agree up to float summation order.
    for name, per_severity in fly["corruptions"].items():
        for severity, metrics in per_severity.items():
            assert files["corruptions"][name][severity] == pytest.approx(metrics, rel=1e-6)
    assert "released files" in files["meta"]["corruption_source"]
    # A second evaluation refuses to overwrite without --overwrite.
    assert main(["evaluate", str(run), "--quiet"]) == 2


def test_report_table_figures_and_heatmap(runs, tmp_path):
    for name in runs:
        for run in runs[name]:
            res = evaluate_saved_run(str(run), corruptions="gaussian_noise,contrast", severities=[1, 3, 5])
            (run / "evaluation.json").write_text(json.dumps(res))
    dirs = [str(r) for rs in runs.values() for r in rs]
    assert main(["report", *dirs, "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| damp σ=0.2 | 2 |" in text and "±" in text
    for png in ("severity_curves.png", "heatmap.png", "damp_vs_daap.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000
    assert "| sgd | 1.00 | 1.00 |" in text  # the baseline row of the ratio table
    assert main(["report", *dirs, "--out", str(tmp_path / "r2"), "--baseline", "nope"]) == 2


def test_aggregates_protocols():
    from damp.corruptions import names
    results = {n: {str(s): {"error": 10.0 * s} for s in range(1, 6)} for n in names()}
    out = aggregate(results, "imagenet")
    assert out["mean_corruption_error"] == pytest.approx(30.0)
    assert out["mean_error_15x5"] == pytest.approx(30.0)
    from damp.metrics import ALEXNET_ERRORS
    expected = 100 * np.mean([150 / (5 * ALEXNET_ERRORS[n]) for n in names("common")])
    assert out["mCE_alexnet"] == pytest.approx(expected)
    assert "mCE_alexnet" not in aggregate(results, "cifar10")
    partial = {k: v for k, v in list(results.items())[:5]}
    assert "mean_error_15x5" not in aggregate(partial, "imagenet")


class Constant(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * x.mean()


def test_fgsm_moves_against_the_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    x = torch.rand(64, 3, 2, 2)
    y = model(x).argmax(-1)  # the model is right on every clean image
    small, large = fgsm_error(model, [(x, y)], [0.0, 0.5])
    assert small["error"] == 0 and large["error"] > 50


def test_imagenet_a_mask_and_d_mapping(tmp_path):
    root = make_imagenet(tmp_path / "inet", classes=4)
    classes = sorted(p.name for p in (root / "train").iterdir())
    variant = tmp_path / "a"
    for c in classes[2:]:  # ImageNet-A style: a subset of the classes
        shutil.copytree(root / "val" / c, variant / c)
    # Without the mask class 0 would win everywhere; restricted to the 2 present classes, class 3 wins.
    model = Constant([5.0, 0.0, 1.0, 2.0])
    assert evaluate_variant(model, str(variant), classes, transform="resize256", mask=True)["error"] == 50.0
    assert evaluate_variant(model, str(variant), classes, transform="resize256")["error"] == 100.0
    d = tmp_path / "d"
    (d / "stuff").mkdir(parents=True)
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(d / "stuff" / "x.png")
    assert evaluate_variant(model, str(d), classes, transform="resize256", mapping={"stuff": [2, 0, -1]})["error"] == 0


def test_trainer_evaluates_released_files_from_eval_c_dir(tmp_path):
    assert main(["corrupt", "--data", "digits", "--out", str(tmp_path / "c"), "--corruptions", "fog",
                 "--severities", "2", "--quiet"]) == 0
    results = train(load_config(None, QUICK + ["eval.corruptions=fog", "eval.severities=[2]",
                                               f"eval.c_dir={tmp_path / 'c'}"]), tmp_path / "run")
    assert "released files" in results["meta"]["corruption_source"]
    assert set(results["corruptions"]["fog"]) == {"2"}


def test_imagenet_c_bar_goes_through_the_clean_preprocessing(tmp_path):
    """IN-C-bar made of copies of the clean val images scores exactly the clean error: both take the
    clean-eval crop (the official DAMP code), whatever the images' native sizes (here 40-90 px)."""
    from damp.variants import IMAGENET_C_BAR

    root = make_imagenet(tmp_path / "inet", classes=3)
    run = tmp_path / "run"
    train(load_config(None, ["trainer.device=cpu", "trainer.progress=false", "trainer.max_steps=1",
                             "eval.corruptions=none", "data.name=imagenet", f"data.root={root}",
                             "data.num_workers=0", "data.batch_size=2", "data.image_size=32"]), run)
    for name in IMAGENET_C_BAR:
        shutil.copytree(root / "val", tmp_path / "c_bar" / name / "1")
    assert main(["evaluate", str(run), "--imagenet-c-bar", str(tmp_path / "c_bar"), "--severities", "1",
                 "--quiet"]) == 0
    res = json.loads((run / "evaluation.json").read_text())
    c_bar = res["variants"]["imagenet_c_bar"]
    assert set(c_bar["corruptions"]) == set(IMAGENET_C_BAR)
    for metrics in c_bar["corruptions"].values():
        assert metrics["1"] == pytest.approx(res["clean"], rel=1e-5, abs=1e-5)
