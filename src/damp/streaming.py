"""The one evaluation engine: a model's metrics streamed over batches into :class:`~damp.metrics.MetricSums`.

Every evaluation of damp runs through these functions: the validation, hold-out and test metrics of
`damp train` (and so of sweeps and the demo), `damp evaluate` of a run or of ``--model``, and
``damp.benchmark``. The sources of batches are in-memory tensors (:func:`tensor_batches`), image
folders (:func:`folder_batches`), released -C files (:func:`evaluate_c_dir`) and corruptions
generated per chunk (:func:`chunk_metrics`); FGSM counts its errors per batch (:func:`fgsm_wrong`).
Logits are never concatenated, so a test set never has to fit in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from damp.corruptions import SEVERITIES
from damp.corruptions.dataset import CHUNK, corrupt_chunk, read_array_c, read_folder_c
from damp.data.folders import load_rgb, to_tensor_u8
from damp.data.pil_augment import center_crop_eval
from damp.metrics import MetricSums
from damp.pixels import to_unit_float

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def tensor_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of (N, C, H, W) uint8 or [0, 1] images on ``device``, as [0, 1] floats."""
    for i in range(0, len(labels), batch_size):
        yield to_unit_float(images[i:i + batch_size].to(device)), labels[i:i + batch_size].to(device)


def folder_batches(samples, batch_size: int, device: torch.device, size: int | None = None,
                   transform: str = "native") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of decoded (path, label) folder samples: "native" (as stored, resized only if sizes differ
    from ``size``), "center" (clean-eval 224/256 centre crop) or "resize256" (256x256 then centre 224)."""
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images = []
        for path, _ in chunk:
            im = load_rgb(path)
            if transform == "center":
                im = center_crop_eval(im, size or 224)
            elif transform == "resize256":  # IN-A / Sketch: bicubic 256x256 (aspect not kept), centre 224
                im = im.resize((256, 256), 3).crop((16, 16, 240, 240))
            elif size is not None and im.size != (size, size):
                im = im.resize((size, size), 3)
            images.append(to_tensor_u8(im))
        x = to_unit_float(torch.stack(images).to(device))
        yield x, torch.tensor([label for _, label in chunk], device=device)


def add_batch(sums: MetricSums, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
    """Add ``model``'s logits on (B, C, H, W) [0, 1] ``x`` to ``sums``, ``batch_size`` images per forward."""
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            sums.update(model(x[start:start + batch_size]), y[start:start + batch_size])


def stream_metrics(model: nn.Module, batches: Batches) -> dict[str, float]:
    """{"error", "nll", "ece"} of ``model`` (in eval mode for the call) over (x [0, 1], y) batches."""
    was_training = model.training
    model.eval()
    sums = MetricSums()
    try:
        with torch.no_grad():
            for x, y in batches:
                sums.update(model(x), y)
    finally:
        model.train(was_training)
    return sums.result()


def fgsm_wrong(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float]) -> torch.Tensor:
    """(len(epsilons),) CPU counts of the images in the batch (x (B, C, H, W) in [0, 1], y (B,)) that
    FGSM at each epsilon makes ``model`` (put in eval mode for the call) misclassify.

    One signed-gradient step of the summed cross-entropy on the true labels, in [0, 1] pixel space
    (normalisation is inside the model, and its positive std keeps the gradient's sign), clipped to
    [0, 1] (paper Tables 1-3: eps = 2/224). All epsilons share one gradient.
    """
    was_training = model.training
    model.eval()
    try:
        x = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            return torch.stack([(model((x + eps * grad.sign()).clamp_(0, 1)).argmax(-1) != y).sum().cpu()
                                for eps in epsilons]).float() if epsilons else torch.zeros(0)
    finally:
        model.train(was_training)


def fgsm_results(wrong: torch.Tensor, epsilons: Sequence[float], total: int) -> list[dict[str, float]]:
    """The results.json ``fgsm`` list from :func:`fgsm_wrong` counts summed over ``total`` images."""
    return [{"eps": float(eps), "error": 100.0 * float(w) / max(total, 1)} for eps, w in zip(epsilons, wrong)]


def fgsm_error(model: nn.Module, batches: Batches, epsilons: Sequence[float]) -> list[dict[str, float]]:
    """Top-1 error (%) under one-step FGSM (:func:`fgsm_wrong`) for each epsilon, over (x, y) batches."""
    wrong, total = torch.zeros(len(epsilons)), 0
    for x, y in batches:
        wrong += fgsm_wrong(model, x, y, epsilons)
        total += len(y)
    return fgsm_results(wrong, epsilons, total)


class ChunkSums:
    """What :func:`chunk_metrics` accumulates: clean and per-(corruption, severity) sums, FGSM counts."""

    def __init__(self, names: Sequence[str], severities: Sequence[int], fgsm: Sequence[float], clean: bool) -> None:
        self.clean = MetricSums() if clean else None
        self.corrupted = {(name, s): MetricSums() for name in names for s in severities}
        self.fgsm, self.wrong, self.images = list(fgsm), torch.zeros(len(fgsm)), 0

    def corruptions(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{name: {str(severity): {"error", "nll", "ece"}}}``."""
        out: dict = {}
        for (name, severity), sums in self.corrupted.items():
            out.setdefault(name, {})[str(severity)] = sums.result()
        return out


def chunk_metrics(model: nn.Module, chunks: Batches, names: Sequence[str], severities: Sequence[int], *,
                  seed: int = 0, preset: str | None = None, frost_dir: str | None = None,
                  fgsm: Sequence[float] = (), clean: bool = True, batch_size: int = CHUNK,
                  progress: Callable[[int], None] | None = None) -> ChunkSums:
    """Stream clean, corrupted and FGSM metrics over consecutive ``CHUNK``-image chunks of a test set.

    Chunk b (uint8 or [0, 1] (B, C, H, W), on the model's device) is corrupted with its own
    generator (:func:`~damp.corruptions.dataset.corrupt_chunk`: the seeding contract of `damp
    corrupt`), so the numbers do not depend on how the images arrived. ``progress`` is called with
    the number of images done after each chunk. ``model`` is in eval mode for the call.
    """
    result = ChunkSums(names, severities, fgsm, clean)
    was_training = model.training
    model.eval()
    try:
        for index, (x, y) in enumerate(chunks):
            if result.clean is not None:
                add_batch(result.clean, model, to_unit_float(x), y, batch_size)
            for (name, severity), sums in result.corrupted.items():
                xc = corrupt_chunk(x, name, severity, index, seed=seed, preset=preset, frost_dir=frost_dir)
                add_batch(sums, model, to_unit_float(xc), y, batch_size)
            if result.fgsm:
                for start in range(0, len(y), batch_size):
                    result.wrong += fgsm_wrong(model, to_unit_float(x[start:start + batch_size]),
                                               y[start:start + batch_size], result.fgsm)
            result.images += len(y)
            if progress is not None:
                progress(result.images)
    finally:
        model.train(was_training)
    return result


def evaluate_c_dir(model: nn.Module, c_dir: str, names: Sequence[str], severities: Sequence[int], *,
                   batch_size: int = 250, classes: list[str] | None = None, progress=None,
                   transform: str = "native", size: int | None = None
                   ) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics on released -C files: CIFAR-10/100-C `.npy` or -C folders, ``{name: {str(severity): metrics}}``.

    Folder images go through :func:`folder_batches` with ``transform``: "native" for Tiny-ImageNet-C /
    ImageNet-C (as stored, no crop, as the official DAMP code; resized only if not ``size``), "center"
    (the clean-eval crop, as the official code decodes it) for ImageNet-C-bar (paper Table 1, IN-C-bar).
    ``progress`` is called with (name, severity) after each set.
    """
    device = next(model.parameters()).device
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        results[name] = {}
        for severity in severities:
            if (Path(c_dir) / f"{name}.npy").is_file():
                images, labels = read_array_c(c_dir, name, severity)
                batches = tensor_batches(images, labels, batch_size, device)
            else:
                samples, _ = read_folder_c(c_dir, name, severity, classes)
                batches = folder_batches(samples, batch_size, device, size, transform)
            results[name][str(severity)] = stream_metrics(model, batches)
            if progress is not None:
                progress(name, severity)
    return results


def _c_dir_severities(root: Path, name: str) -> list[int]:
    """Severities stored for ``name`` in a -C directory (either layout); [] if it is absent."""
    if (root / f"{name}.npy").is_file():
        if not (root / "labels.npy").is_file():
            return []
        meta = root / "meta.json"
        try:
            return list(json.loads(meta.read_text())["severities"]) if meta.is_file() else list(SEVERITIES)
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{meta}: not a damp meta.json (no severities list)") from None
    folder = root / name
    return [s for s in SEVERITIES if (folder / str(s)).is_dir()] if folder.is_dir() else []


def check_c_dir(c_dir: str, names: Sequence[str], severities: Sequence[int], what: str = "eval.c_dir") -> None:
    """Raise FileNotFoundError unless ``c_dir`` holds every (corruption, severity) asked for."""
    root = Path(c_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{what}: {root} is not a directory")
    missing = [f"{n}/{s}" for n in names for s in severities if s not in _c_dir_severities(root, n)]
    if missing:
        shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
        raise FileNotFoundError(f"{what}: {root} lacks {len(missing)} of the {len(names) * len(severities)} "
                                f"requested corruption/severity sets ({shown}); narrow the corruptions or "
                                "severities, or complete the folder")
