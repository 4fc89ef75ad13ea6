"""`damp probe`: the paper's mechanism (§2.2, Theorem 1, App. B) as a measurement on a trained model.

A corruption g changes the input of every layer; for one neuron, g(x) = x + eps has the effect of
a multiplicative weight perturbation xi = 1 + eps / x, elementwise (Theorem 1). For each layer
with a perturbed kernel (conv, linear) and each corruption x severity, this measures the
distribution of the elementwise ratio ``corrupted input / clean input`` of that layer, the xi
that turns the clean input into the corrupted one: its std (and a robust std from the 16th-84th
percentiles) and quantiles, next to the sigma the run was trained with. A DAMP run with
sigma covers a corruption at a layer when the ratio's spread there is of order sigma.

Elements whose clean input is near zero (``|x| <= RELATIVE_FLOOR * mean |x|`` of the layer, e.g.
after a ReLU) have no defined ratio and are left out; ``used`` says what fraction was kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from damp.methods.perturb import perturbed_parameters

QUANTILES = (0.05, 0.16, 0.25, 0.5, 0.75, 0.84, 0.95)
RELATIVE_FLOOR = 1e-2
MAX_ELEMENTS = 1 << 22  # torch.quantile's input is subsampled (every k-th element) above this


def probed_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{name: module} of the modules whose kernel DAMP perturbs (norm layers left out: their input is
    normalised away)."""
    owners = {name.rpartition(".")[0] for name, _ in perturbed_parameters(model)}
    return {name: module for name, module in model.named_modules() if name in owners
            and isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))}


def layer_inputs(model: nn.Module, x: torch.Tensor, layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """The input of every layer in ``layers`` for the batch x, in eval mode without gradients."""
    captured: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_pre_hook(lambda m, args, name=name: captured.__setitem__(name,
                                                                                              args[0].detach()))
             for name, module in layers.items()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def ratio_statistics(clean: torch.Tensor, corrupted: torch.Tensor) -> dict:
    """Std, robust std and quantiles of ``corrupted / clean`` where the clean value is not near zero."""
    clean, corrupted = clean.flatten().double(), corrupted.flatten().double()
    keep = clean.abs() > RELATIVE_FLOOR * clean.abs().mean()
    ratio = corrupted[keep] / clean[keep]
    if ratio.numel() == 0:
        return {"used": 0.0, "std": None, "robust_std": None, "quantiles": {}}
    sample = ratio[:: max(1, ratio.numel() // MAX_ELEMENTS)]
    values = torch.quantile(sample, torch.tensor(QUANTILES, dtype=sample.dtype)).tolist()
    quantiles = {f"q{round(100 * q)}": v for q, v in zip(QUANTILES, values)}
    return {"used": float(keep.double().mean()), "std": float(ratio.std()) if ratio.numel() > 1 else 0.0,
            "robust_std": (quantiles["q84"] - quantiles["q16"]) / 2, "quantiles": quantiles}


def probe(model: nn.Module, images: torch.Tensor, corruptions: dict[str, Callable[[torch.Tensor, int], torch.Tensor]],
          severities: Sequence[int]) -> dict[str, dict[str, dict[str, dict]]]:
    """{layer: {corruption: {severity: ratio statistics}}} for images (B, C, H, W) in [0, 1].

    ``corruptions[name](images, severity)`` returns the corrupted batch (same shape, [0, 1]).
    """
    was_training = model.training
    model.eval()
    try:
        layers = probed_layers(model)
        clean = layer_inputs(model, images, layers)
        out: dict = {name: {} for name in layers}
        for corruption, apply in corruptions.items():
            for severity in severities:
                corrupted = layer_inputs(model, apply(images, severity), layers)
                for name in layers:
                    out[name].setdefault(corruption, {})[str(severity)] = ratio_statistics(clean[name],
                                                                                           corrupted[name])
        return out
    finally:
        model.train(was_training)


def plot_probe(results: dict, sigma: float | None, path, layer: str | None = None) -> None:
    """Ratio robust std by corruption and severity at one layer (default: the first), sigma marked."""
    from damp.report_figures import pyplot, save_figure  # matplotlib on first use

    layer = layer or next(iter(results))
    fig, ax = pyplot().subplots(figsize=(10, 4))
    corruptions = list(results[layer])
    for i, corruption in enumerate(corruptions):
        for severity, stats in results[layer][corruption].items():
            if stats["robust_std"] is not None:
                ax.scatter(i, stats["robust_std"], s=8 + 8 * int(severity), color=f"C{int(severity) - 1}",
                           label=f"severity {severity}" if i == 0 else None)
    if sigma is not None:
        ax.axhline(sigma, color="k", ls="--", lw=1, label=f"σ = {sigma:g} (the run's)")
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-3)  # a near-zero spread (a sparse corruption) sits on the axis
    ax.set(xticks=range(len(corruptions)), ylabel="robust std of the input ratio",
           title=f"Theorem 1's ξ at layer {layer}: corrupted / clean input")
    ax.set_xticklabels(corruptions, rotation=60, ha="right", fontsize=8)
    ax.legend(fontsize=7)
    save_figure(fig, path)
