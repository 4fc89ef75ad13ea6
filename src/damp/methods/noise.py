"""DAMP (multiplicative weight noise, paper Algorithm 1) and DAAP (additive, paper Algorithm 3).

Per step: split the batch into M equal sub-batches; for sub-batch m draw xi_m per element of every
perturbed parameter, evaluate the gradient of that sub-batch's loss *with respect to the weights at
the perturbed point* (omega * xi_m for DAMP, omega + xi_m for DAAP), and average over m. As in the
paper (line 9) and the official JAX code (`jax.value_and_grad` applied to the noisy tree), there is
**no chain-rule xi factor**: the gradient is dL/dw evaluated at w = omega * xi. Weight decay is the
optimizer's business and acts on the clean omega, which is restored bit-exactly after the step.

BatchNorm: this loop executor normalises each sub-batch separately (the official code syncs BN
statistics over the whole batch; the fused executor of the performance work does that). Running
statistics are updated by the perturbed forwards, as in the official code.

DDP: each rank draws its own noise, from (seed, rank, step); the backward passes of all sub-batches
but the last run under ``no_sync()``, so gradients are all-reduced once per step.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from damp.methods.base import (LossFn, Method, check_nonnegative, current_rank, forward_loss, grad_sync,
                               run_backward)
from damp.methods.perturb import ParamSelector, derive_seed, snapshot, split_batch


def draw_noise(params: list[torch.Tensor], std: float, generator: torch.Generator) -> list[torch.Tensor]:
    """One N(0, std^2) draw per element of every tensor in ``params``, in order, as float32 views.

    A single flat ``randn`` keeps the draw cheap for many small tensors and makes the stream depend
    only on the total element count and order.
    """
    sizes = [p.numel() for p in params]
    flat = torch.randn(sum(sizes), generator=generator, device=generator.device, dtype=torch.float32)
    flat.mul_(std)
    return [chunk.view_as(p) for chunk, p in zip(flat.split(sizes), params)]


@torch.no_grad()
def perturb_multiplicative_(params: list[torch.Tensor], noise: list[torch.Tensor]) -> None:
    """``w <- w * (1 + eps)`` in place, for eps ~ N(0, std^2): DAMP's xi ~ N(1, std^2)."""
    for p, eps in zip(params, noise):
        p.mul_(eps.to(device=p.device, dtype=p.dtype).add_(1.0))


@torch.no_grad()
def perturb_additive_(params: list[torch.Tensor], noise: list[torch.Tensor]) -> None:
    """``w <- w + eps`` in place: DAAP's xi ~ N(0, std^2)."""
    for p, eps in zip(params, noise):
        p.add_(eps.to(device=p.device, dtype=p.dtype))


class WeightNoise(Method):
    """Random weight perturbations per sub-batch; see :class:`DAMP` and :class:`DAAP`."""

    name = "weight_noise"
    multiplicative = True

    def __init__(self, std: float, num_perturbations: int = 1, seed: int | None = None, *,
                 params: ParamSelector | None = None) -> None:
        super().__init__(num_perturbations=num_perturbations, params=params)
        self.std = check_nonnegative("std", std)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"Invalid seed: {seed!r} (must be a non-negative integer or None)")
        # No global RNG: an unseeded method takes fresh OS entropy, recorded in state_dict().
        self.seed = int.from_bytes(os.urandom(8), "little") >> 1 if seed is None else seed
        self.step = 0

    def hparams(self) -> dict[str, Any]:
        return {"std": self.std, "num_perturbations": self.num_perturbations, "seed": self.seed}

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.step = int(state["step"])

    def generator(self, device: torch.device) -> torch.Generator:
        """The generator for the current step: a pure function of (seed, rank, step)."""
        gen = torch.Generator(device=device)
        gen.manual_seed(derive_seed(self.seed, current_rank(), self.step))
        return gen

    def backward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn,
                 *, scaler: torch.amp.GradScaler | None = None,
                 autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        m_total = self.num_perturbations
        chunks = split_batch(inputs, targets, m_total)
        params = [p for _, p in self.select_params(model)]
        gen = self.generator(params[0].device if params else inputs.device)
        perturb_ = perturb_multiplicative_ if self.multiplicative else perturb_additive_
        losses = []
        with snapshot(params) as clean:
            for m, (x, y) in enumerate(chunks):
                if m:
                    clean.restore()
                perturb_(params, draw_noise(params, self.std, gen))
                with grad_sync(model, enabled=m == m_total - 1):
                    loss = forward_loss(model, x, y, loss_fn, autocast_dtype)
                    # Equal sub-batches: the mean of the M sub-batch means is the batch mean.
                    run_backward(loss / m_total, scaler)
                losses.append(loss.detach())
        self.step += 1
        return torch.stack(losses).mean()


class DAMP(WeightNoise):
    """DAMP: gradients at multiplicatively perturbed weights, xi ~ N(1, std^2) (paper Algorithm 1).

    Args:
        std: sigma of the multiplicative noise (paper: 0.1-0.25).
        num_perturbations: M equal sub-batches per batch, one noise draw each (paper: 8).
        seed: seed of the method's own noise stream (combined with the DDP rank and the step).
        params: selector of the perturbed parameters (default: kernels and norm scales).

    >>> model = nn.Linear(3, 2)
    >>> w = model.weight.detach().clone()
    >>> loss = DAMP(std=0.2, num_perturbations=2, seed=0).backward(
    ...     model, torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), nn.functional.cross_entropy)
    >>> bool(torch.equal(model.weight, w)), model.weight.grad.shape
    (True, torch.Size([2, 3]))
    """

    name = "damp"
    multiplicative = True


class DAAP(WeightNoise):
    """DAAP: the additive baseline, gradients at omega + xi with xi ~ N(0, std^2) (paper Algorithm 3)."""

    name = "daap"
    multiplicative = False
