"""damp.metrics: error, NLL and ECE by hand, streamed sums equal to whole-set ones, and the aggregates."""

from __future__ import annotations

import math

import pytest
import torch

from damp.corruptions import SEVERITIES
from damp.corruptions import names as corruption_names
from damp.metrics import ALEXNET_ERRORS, MetricSums, aggregate, classification_metrics, summarize


def test_error_nll_and_ece_by_hand():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)], [0.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    m = classification_metrics(logits, labels)
    # softmax: 0.75 on the predicted class for rows 0-1, 0.5/0.5 for row 2 (predicted 0: argmax's first)
    assert m["error"] == pytest.approx(100 * 2 / 3)
    assert m["nll"] == pytest.approx((-math.log(0.75) - math.log(0.25) - math.log(0.5)) / 3)
    # bins: {0.75: one right, one wrong -> |0.75 + 0.75 - 1| = 0.5}, {0.5: wrong -> 0.5}; over 3 images
    assert m["ece"] == pytest.approx(100 * (0.5 + 0.5) / 3)


def test_confident_and_right_has_no_error_and_no_calibration_gap():
    logits = torch.eye(4) * 100
    m = classification_metrics(logits, torch.arange(4))
    assert m["error"] == 0 and m["ece"] == pytest.approx(0, abs=1e-6) and m["nll"] == pytest.approx(0, abs=1e-6)


def test_streamed_sums_equal_the_whole_set():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(1000, 10, generator=g) * 3, torch.randint(0, 10, (1000,), generator=g)
    sums = MetricSums()
    for start in range(0, 1000, 96):
        sums.update(logits[start:start + 96], labels[start:start + 96])
    whole = classification_metrics(logits, labels)
    assert sums.count == 1000
    assert sums.result() == pytest.approx(whole, rel=1e-6)  # float32 NLL sums per batch
    with pytest.raises(ValueError, match="no batches"):
        MetricSums().result()


def _results(error_of) -> dict:
    return {name: {str(s): {"error": error_of(name, s)} for s in SEVERITIES} for name in corruption_names("common")}


def test_summary_means_over_corruptions_then_severities():
    results = {"a": {"1": {"error": 10.0}, "2": {"error": 30.0}}, "b": {"1": {"error": 20.0}, "2": {"error": 50.0}}}
    out = summarize(results)
    assert out["severity_error"] == {"1": 15.0, "2": 40.0} and out["mean_corruption_error"] == 27.5


def test_alexnet_errors_give_an_mce_of_100_on_imagenet_only():
    alexnet = _results(lambda name, s: ALEXNET_ERRORS[name])
    assert aggregate(alexnet, "imagenet")["mCE_alexnet"] == pytest.approx(100.0)
    assert "mCE_alexnet" not in aggregate(alexnet, "cifar10")
    half = aggregate(_results(lambda name, s: ALEXNET_ERRORS[name] / 2), "imagenet")
    assert half["mCE_alexnet"] == pytest.approx(50.0)
    assert half["mean_error_15x5"] == pytest.approx(sum(ALEXNET_ERRORS.values()) / 2 / len(ALEXNET_ERRORS))
    partial = {name: cells for name, cells in list(alexnet.items())[:14]}  # 14 of the 15: no 15x5 aggregates
    assert "mean_error_15x5" not in aggregate(partial, "imagenet")
    with pytest.raises(ValueError, match="mCE baseline"):
        aggregate(alexnet, "imagenet", alexnet="other")
