"""Random weight perturbation: RWP, and the mixed-loss m-RWP of Li et al. (TMLR 2024, arXiv 2404.00357).

RWP: the gradient at omega + eps, with filter-wise Gaussian noise scaled by each filter's norm:
for a kernel (out, ...), row f gets eps ~ N(0, (std * ||omega_f||)^2) per element; a vector (a
bias, a norm scale or shift) gets std * ||omega||. As in the official code (nblt/mARWP,
train_mrwp_parallel.py), every trainable parameter is perturbed. One draw per sub-batch, as DAMP
and DAAP (the official code draws one per batch; M = 1 is that). No chain-rule factor: the
gradient is dL/dw evaluated at w = omega + eps, restored exactly afterwards.

m-RWP: ``mix * grad L(omega + eps) + (1 - mix) * grad L(omega)`` on the whole batch (the official
code runs the two on two processes, each with its own batch, with loss weights 2 mix and 2 (1 - mix),
averaged by DDP), so it costs two passes. BatchNorm's running statistics come from the clean pass (the official
code's DDP broadcasts the clean process's buffers).

Deviations: the official code grows std during training (RWP's ``--inc`` cosine schedule, m-RWP's
optional ``--incstd``) and its adaptive variants (ARWP) shape the noise by past gradients; neither
is implemented here. m-RWP's official scripts take the clean and the perturbed gradient on two
different batches (two processes, or consecutive batches) and double the epochs; damp takes both on
the same batch, so a step sees B images instead of 2B: the same expected gradient, another variance.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from damp.dist import unwrap
from damp.methods.base import LossFn, check_nonnegative
from damp.methods.noise import WeightNoise
from damp.methods.perturb import NamedParams, ParamSelector, frozen_batchnorm_stats
from damp.methods.sgd import SGD

# The official code's guard against a zero norm (1-D parameters).
NORM_EPSILON = 1e-16


def all_trainable(model: nn.Module) -> NamedParams:
    """Every parameter that requires a gradient (RWP perturbs them all), tied ones once."""
    seen: set[int] = set()
    named = []
    for name, param in model.named_parameters():
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            named.append((name, param))
    return named


@torch.no_grad()
def filter_norms(param: torch.Tensor) -> torch.Tensor:
    """||omega_f|| per output filter, shaped to broadcast over ``param`` (a vector: its one norm)."""
    if param.dim() > 1:
        return param.flatten(1).norm(dim=1).view(-1, *[1] * (param.dim() - 1))
    return param.norm() + NORM_EPSILON


class RWP(WeightNoise):
    """RWP: gradients at omega + eps, eps filter-wise N(0, (std * ||omega_f||)^2) (Li et al. 2024).

    Args:
        std: the noise scale relative to each filter's norm (the official m-RWP CIFAR script: 0.015).
        num_perturbations: M equal sub-batches, one draw each (1: one draw per batch, as the official code).
        seed, params, executor, batchnorm: as :class:`damp.methods.DAMP`; ``params`` defaults to every
            trainable parameter.
    """

    multiplicative = False

    def __init__(self, std: float, num_perturbations: int = 1, seed: int | None = None, *,
                 params: ParamSelector | None = None, executor: str = "auto", batchnorm: str = "whole") -> None:
        super().__init__(std, num_perturbations, seed, params=params or all_trainable, executor=executor,
                         batchnorm=batchnorm)

    def draw(self, params: list[torch.Tensor], subbatches: range, device: torch.device) -> list[torch.Tensor]:
        """N(0, std^2) per element (as DAAP), then scaled in place by each filter's norm."""
        noise = super().draw(params, subbatches, device)
        for p, eps in zip(params, noise):
            eps.mul_(filter_norms(p).to(eps.dtype))
        return noise


class MixedRWP(RWP):
    """m-RWP: ``mix`` times RWP's gradient plus ``1 - mix`` times SGD's, on the whole batch (Li et al. 2024).

    Args:
        std: as :class:`RWP`.
        mix: the weight of the perturbed loss (the official default: 0.5).
    """

    def __init__(self, std: float, mix: float = 0.5, num_perturbations: int = 1, seed: int | None = None, *,
                 params: ParamSelector | None = None, executor: str = "auto", batchnorm: str = "whole") -> None:
        super().__init__(std, num_perturbations, seed, params=params, executor=executor, batchnorm=batchnorm)
        self.mix = check_nonnegative("mix", mix)
        if self.mix > 1:
            raise ValueError(f"Invalid mix: {mix!r} (must be in [0, 1])")
        self._clean = SGD()

    def hparams(self) -> dict[str, Any]:
        return {"std": self.std, "mix": self.mix, "num_perturbations": self.num_perturbations, "seed": self.seed}

    def backward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn,
                 *, scaler: torch.amp.GradScaler | None = None,
                 autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        def perturbed_loss(outputs, y):
            return self.mix * loss_fn(outputs, y)

        def clean_loss(outputs, y):
            return (1.0 - self.mix) * loss_fn(outputs, y)
        with frozen_batchnorm_stats(unwrap(model)):  # the running statistics come from the clean pass
            perturbed = super().backward(model, inputs, targets, perturbed_loss, scaler=scaler,
                                         autocast_dtype=autocast_dtype)
        clean = self._clean.backward(model, inputs, targets, clean_loss, scaler=scaler, autocast_dtype=autocast_dtype)
        return perturbed + clean  # the mixed objective
