"""Evaluation: clean and corrupted error (%), NLL and 15-bin ECE (%), always with the clean weights."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from damp.corruptions.dataset import CHUNK, corrupted_chunks

ECE_BINS = 15  # as the official DAMP code's test_model (paper.md §3.8)


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
    logits = logits.float()
    probs = logits.softmax(-1)
    confidence, prediction = probs.max(-1)
    correct = (prediction == labels).float()
    nll = F.cross_entropy(logits, labels).item()
    edges = torch.linspace(0, 1, bins + 1, device=logits.device)
    which = torch.bucketize(confidence, edges[1:-1], right=True)  # bin i covers (edge_i, edge_i+1]
    count = torch.zeros(bins, device=logits.device).index_add_(0, which, torch.ones_like(confidence))
    gap = torch.zeros(bins, device=logits.device).index_add_(0, which, confidence - correct)
    ece = gap.abs().sum() / max(len(labels), 1)
    return {"error": 100.0 * (1.0 - correct.mean().item()), "nll": nll, "ece": 100.0 * ece.item()}


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated (logits, labels) of ``model`` in eval mode over an iterable of (x, y) batches."""
    was_training = model.training
    model.eval()
    try:
        outs, ys = [], []
        for x, y in batches:
            outs.append(model(x).float())
            ys.append(y)
        return torch.cat(outs), torch.cat(ys)
    finally:
        model.train(was_training)


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device):
    for i in range(0, len(labels), batch_size):
        x = images[i:i + batch_size].to(device)
        yield (x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()), labels[i:i + batch_size].to(device)


def evaluate_clean(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500
                   ) -> dict[str, float]:
    """Metrics on clean images (uint8 or float [0, 1], (N, C, H, W)) on the model's device."""
    device = next(model.parameters()).device
    return classification_metrics(*predict(model, _batches(images, labels, batch_size, device)))


def evaluate_corruptions(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, names: Sequence[str],
                         severities: Sequence[int] = (1, 2, 3, 4, 5), *, preset: str | None = None,
                         seed: int = 0, frost_dir: str | None = None, progress=None
                         ) -> dict[str, dict[str, dict[str, float]]]:
    """Corrupt the clean test set on the fly (seeded, batched on the model's device) and evaluate.

    Uses :func:`damp.corruptions.dataset.corrupted_chunks`, so the images are the ones
    ``damp corrupt`` writes with the same seed (up to the uint8 truncation of the files).

    Returns:
        ``{name: {str(severity): {"error", "nll", "ece"}}}``.
    """
    device = next(model.parameters()).device
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        results[name] = {}
        for severity in severities:
            chunks = corrupted_chunks(images, name, severity, seed=seed, device=device, preset=preset,
                                      frost_dir=frost_dir)
            batches = ((x if x.is_floating_point() else x.float() / 255,
                        labels[i * CHUNK:i * CHUNK + len(x)].to(device)) for i, x in enumerate(chunks))
            results[name][str(severity)] = classification_metrics(*predict(model, batches))
            if progress is not None:
                progress(name, severity)
    return results


def summarize(results: dict[str, dict[str, dict[str, float]]]) -> dict:
    """The paper's aggregates: per-severity mean error over corruptions, and the overall mean."""
    names = list(results)
    severities = sorted({s for r in results.values() for s in r}, key=int)
    per_severity = {s: sum(results[n][s]["error"] for n in names) / len(names) for s in severities}
    return {"mean_corruption_error": sum(per_severity.values()) / max(len(per_severity), 1),
            "severity_error": per_severity}


def available(names: Sequence[str], frost_dir: str | None = None) -> tuple[list[str], dict[str, str]]:
    """Split corruption names into those that can run here and {name: reason} for the rest.

    Only frost depends on external files (its textures); benchmarks list it as unavailable rather than
    dropping it silently.
    """
    from damp.corruptions.assets import FrostUnavailable, find_frost_dir

    unavailable = {}
    if "frost" in names:
        try:
            find_frost_dir(frost_dir)
        except FrostUnavailable as err:
            unavailable["frost"] = str(err)
    return [n for n in names if n not in unavailable], unavailable


def evaluate_run(model: nn.Module, bundle, cfg) -> dict:
    """Clean metrics plus the configured robustness evaluation of a trained model (clean weights).

    Returns the results.json structure: {"clean", "corruptions", "summary", "fgsm", "meta"}.
    """
    from damp.config import resolve_corruptions

    e = cfg.eval
    results: dict = {"clean": classification_metrics(*predict(model, bundle.test)), "corruptions": {},
                     "summary": {}, "fgsm": [],
                     "meta": {"units": {"error": "%", "ece": "% (15 bins)", "nll": "nats"},
                              "dataset": cfg.data.name, "model": cfg.model.name}}
    names = resolve_corruptions(e.corruptions)
    if names:
        if bundle.test_arrays is None:
            raise ValueError("eval.corruptions: on-the-fly corruption needs an in-memory test set; for folder "
                             "datasets point eval.c_dir at the released -C folders")
        images, labels = bundle.test_arrays
        names, unavailable = available(names, cfg.data.frost_dir)
        if unavailable:
            results["meta"]["unavailable_corruptions"] = unavailable
        results["corruptions"] = evaluate_corruptions(model, images, labels, names, e.severities, seed=e.seed,
                                                      frost_dir=cfg.data.frost_dir)
        results["summary"] = summarize(results["corruptions"])
        results["meta"]["corruption_source"] = f"generated on the fly (damp.corruptions, seed {e.seed})"
        results["meta"]["protocol"] = f"per-severity mean over {len(names)} corruptions (DAMP paper)"
    return results
