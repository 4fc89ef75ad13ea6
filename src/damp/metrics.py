"""Pure metrics over logits and results dicts: error, NLL, ECE, the paper's aggregates and mCE.

No model, no data: functions of tensors and of the ``{corruption: {severity: metrics}}`` dicts
that :mod:`damp.evaluate` produces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from damp.corruptions import SEVERITIES
from damp.corruptions import names as corruption_names

UNITS = {"error": "%", "ece": "% (15 bins)", "nll": "nats"}
ECE_BINS = 15  # as the official DAMP code's test_model (ECE is not reported in the paper)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS
                           ) -> dict[str, float]:
    """Top-1 error (%), mean NLL (nats) and expected calibration error (%, ``bins`` equal-width bins).

    Args:
        logits: (N, K) float.
        labels: (N,) int64.

    >>> m = classification_metrics(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]))
    >>> m["error"]
    50.0
    """
    sums = MetricSums(bins)  # one formula for whole sets and for streamed batches
    sums.update(logits, labels)
    return sums.result()


class MetricSums:
    """:func:`classification_metrics` over batches that arrive one at a time (float64 sums), for data
    that does not fit in memory. ``update`` keeps the sums on the logits' device (no host sync)."""

    def __init__(self, bins: int = ECE_BINS) -> None:
        self.bins = bins
        self.count = 0
        self.sums: torch.Tensor | None = None  # [wrong, nll sum, per-bin (confidence - correct) sums...]

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """logits (B, K), labels (B,)."""
        logits = logits.float()
        confidence, prediction = logits.softmax(-1).max(-1)
        correct = (prediction == labels).float()
        edges = torch.linspace(0, 1, self.bins + 1, device=logits.device)
        which = torch.bucketize(confidence, edges[1:-1], right=False)
        gap = torch.zeros(self.bins, device=logits.device, dtype=torch.float64).index_add_(
            0, which, (confidence - correct).double())
        nll = F.cross_entropy(logits, labels, reduction="sum").double()
        part = torch.cat([(1 - correct).sum().double().view(1), nll.view(1), gap])
        self.sums = part if self.sums is None else self.sums + part
        self.count += len(labels)

    def result(self) -> dict[str, float]:
        """{"error" (%), "nll" (nats), "ece" (%)} over every batch so far."""
        if self.sums is None:
            raise ValueError("no batches were evaluated")
        sums, count = self.sums.cpu(), max(self.count, 1)
        return {"error": 100.0 * float(sums[0]) / count, "nll": float(sums[1]) / count,
                "ece": 100.0 * float(sums[2:].abs().sum()) / count}


def summarize(results: dict[str, dict[str, dict[str, float]]]) -> dict:
    """The paper's aggregates: per-severity mean error over corruptions, and the overall mean."""
    names = list(results)
    severities = sorted({s for r in results.values() for s in r}, key=int)
    per_severity = {s: sum(results[n][s]["error"] for n in names) / len(names) for s in severities}
    return {"mean_corruption_error": sum(per_severity.values()) / max(len(per_severity), 1),
            "severity_error": per_severity}


# AlexNet mean error (%) over the 5 severities per ImageNet-C corruption, the mCE normaliser of
# Hendrycks & Dietterich (ICLR 2019): full 50k-image sets, the values hendrycks/robustness publishes
# (also used by google-research/augmix). Canonical; ``mCE_alexnet`` uses these.
ALEXNET_ERRORS = {"gaussian_noise": 88.6428, "shot_noise": 89.4468, "impulse_noise": 92.2640,
                  "defocus_blur": 81.9880, "glass_blur": 82.6268, "motion_blur": 78.5948, "zoom_blur": 79.8360,
                  "snow": 86.6816, "frost": 82.6572, "fog": 81.9324, "brightness": 56.4592, "contrast": 85.3204,
                  "elastic_transform": 64.6056, "pixelate": 71.7840, "jpeg_compression": 60.6500}
# RobustBench's stored AlexNet row, measured on its fixed 5000-image ImageNet-C subset. Only for
# comparing with RobustBench numbers (``aggregate(..., alexnet="robustbench-5k")``).
ALEXNET_ERRORS_ROBUSTBENCH_5K = {
    "gaussian_noise": 88.16, "shot_noise": 88.83, "impulse_noise": 91.72, "defocus_blur": 82.20,
    "glass_blur": 83.08, "motion_blur": 78.72, "zoom_blur": 79.57, "snow": 86.80, "frost": 83.15, "fog": 82.36,
    "brightness": 55.85, "contrast": 85.43, "elastic_transform": 64.80, "pixelate": 71.86, "jpeg_compression": 60.68}
# --mce-baseline choice -> (AlexNet table, summary key, protocol label)
MCE_BASELINES = {
    "hendrycks": (ALEXNET_ERRORS, "mCE_alexnet",
                  "ImageNet-C mCE normalised by AlexNet (Hendrycks & Dietterich, full 50k sets)"),
    "robustbench-5k": (ALEXNET_ERRORS_ROBUSTBENCH_5K, "mCE_alexnet_robustbench_5k",
                       "ImageNet-C mCE normalised by RobustBench's AlexNet row (its 5000-image subset)")}


def aggregate(results: dict[str, dict[str, dict[str, float]]], dataset: str, alexnet: str = "hendrycks") -> dict:
    """Every aggregate we report, each labelled by its protocol ({} when there are no results).

    - ``mean_corruption_error`` / ``severity_error``: per-severity mean over the corruptions present,
      then the mean over severities (the DAMP paper's protocol, 19 corruptions on CIFAR/Tiny).
    - ``mean_error_15x5``: mean over the 15 common corruptions x 5 severities (RobustBench,
      ImageNet-C as the paper reports it), when all 75 are present.
    - ``mCE_alexnet``: ImageNet-C mean over the 15 of sum_s E / sum_s E_AlexNet (in %), with the
      canonical Hendrycks & Dietterich AlexNet errors, when all 75 are present and the dataset is
      ImageNet; ``alexnet="robustbench-5k"`` gives ``mCE_alexnet_robustbench_5k`` instead.
    """

    if alexnet not in MCE_BASELINES:
        raise ValueError(f"mCE baseline {alexnet!r} is not one of {', '.join(MCE_BASELINES)}")
    if not results:
        return {}
    table, mce_key, mce_label = MCE_BASELINES[alexnet]
    out = summarize(results)
    common = corruption_names("common")
    full = all(n in results and all(str(s) in results[n] for s in SEVERITIES) for n in common)
    if full:
        cells = [results[n][str(s)]["error"] for n in common for s in SEVERITIES]
        out["mean_error_15x5"] = sum(cells) / len(cells)
        if dataset == "imagenet":
            ce = [sum(results[n][str(s)]["error"] for s in SEVERITIES) / (len(SEVERITIES) * table[n]) for n in common]
            out[mce_key] = 100.0 * sum(ce) / len(ce)
    out["protocols"] = {"mean_corruption_error": f"per-severity mean over {len(results)} corruptions (DAMP paper)",
                        "mean_error_15x5": "mean over 15 common corruptions x 5 severities (RobustBench / IN-C)",
                        mce_key: mce_label}
    return out
