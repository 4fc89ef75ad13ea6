"""Metrics and the on-the-fly corruption evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from damp.evaluate import classification_metrics, evaluate_clean, evaluate_corruptions, summarize


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
