"""DAMP (multiplicative weight noise, paper Algorithm 1) and DAAP (additive, paper Algorithm 3).

Per step: split the batch into M equal sub-batches; for sub-batch m draw xi_m per element of every
perturbed parameter, evaluate the gradient of that sub-batch's loss *with respect to the weights at
the perturbed point* (omega * xi_m for DAMP, omega + xi_m for DAAP), and average over m. As in the
paper (line 9) and the official JAX code (`jax.value_and_grad` applied to the noisy tree), there is
**no chain-rule xi factor**: the gradient is dL/dw evaluated at w = omega * xi. Weight decay is the
optimizer's business and acts on the clean omega, which is restored bit-exactly after the step.

Executors (``executor=``):
- "fused" (methods/fused.py): one forward/backward for all M sub-batches with grouped convolutions
  and batched matmuls; BatchNorm normalises over the whole batch (the official code's synced BN).
  The weights themselves are never modified.
- "loop": M forward/backward passes at in-place perturbed weights, restored bit-exactly afterwards;
  BatchNorm normalises each sub-batch separately. Works for any model.
- "auto" (default): on CUDA, fused when M > 1 and every perturbed parameter belongs to a Conv2d,
  Linear or normalisation layer; otherwise (and always on CPU) the loop. On this project's 2-core
  CPU the loop measured fastest (DAMP/SGD 1.06 for the small CNN, 0.72 for ResNet18 at batch 128,
  against 1.5 and 1.9 fused; docs/performance.md), because oneDNN runs small batches efficiently and
  grouped convolutions slowly. So under "auto" BatchNorm statistics are per sub-batch on CPU and
  whole-batch on CUDA; pass executor="fused" for the reference's synced BN everywhere.
  Both executors draw the same noise in the same order, and on models without BatchNorm their
  gradients agree within float tolerance.

Running statistics are updated by the perturbed forwards, as in the official code.

DDP: each rank draws its own noise, from (seed, rank, step). The fused pass all-reduces once; in the
loop, the backward passes of all sub-batches but the last run under ``no_sync()``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from damp.methods.base import (LossFn, Method, check_nonnegative, current_rank, forward_loss, grad_sync,
                               run_backward)
from damp.checkpoint import unwrap
from damp.methods.fused import fusable_modules, perturbed_copies
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


def _like_params(params: list[torch.Tensor], noise: list[torch.Tensor]) -> list[torch.Tensor]:
    return [eps if eps.device == p.device and eps.dtype == p.dtype else eps.to(device=p.device, dtype=p.dtype)
            for p, eps in zip(params, noise)]


@torch.no_grad()
def perturb_multiplicative_(params: list[torch.Tensor], noise: list[torch.Tensor]) -> None:
    """``w <- w * (1 + eps)`` in place, for eps ~ N(0, std^2): DAMP's xi ~ N(1, std^2)."""
    xi = _like_params(params, noise)
    torch._foreach_add_(xi, 1.0)
    torch._foreach_mul_(params, xi)


@torch.no_grad()
def perturb_additive_(params: list[torch.Tensor], noise: list[torch.Tensor]) -> None:
    """``w <- w + eps`` in place: DAAP's xi ~ N(0, std^2)."""
    torch._foreach_add_(params, _like_params(params, noise))


class WeightNoise(Method):
    """Random weight perturbations per sub-batch; see :class:`DAMP` and :class:`DAAP`."""

    name = "weight_noise"
    multiplicative = True

    def __init__(self, std: float, num_perturbations: int = 1, seed: int | None = None, *,
                 params: ParamSelector | None = None, executor: str = "auto") -> None:
        super().__init__(num_perturbations=num_perturbations, params=params)
        self.std = check_nonnegative("std", std)
        if executor not in ("auto", "loop", "fused"):
            raise ValueError(f"Invalid executor: {executor!r} (auto, loop or fused)")
        self.executor = executor
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"Invalid seed: {seed!r} (must be a non-negative integer or None)")
        # No global RNG: an unseeded method takes fresh OS entropy, recorded in state_dict().
        self.seed = int.from_bytes(os.urandom(8), "little") >> 1 if seed is None else seed
        self.step = 0

    def hparams(self) -> dict[str, Any]:
        return {"std": self.std, "num_perturbations": self.num_perturbations, "seed": self.seed}

    def __repr__(self) -> str:
        extra = "" if self.executor == "auto" else f", executor={self.executor!r}"
        return super().__repr__()[:-1] + extra + ")"

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
        modules = self.fused_modules(model, params)
        if modules is not None:
            loss = self._fused_backward(model, inputs, targets, loss_fn, params, modules, gen, scaler,
                                        autocast_dtype)
            self.step += 1
            return loss
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


    def fused_modules(self, model: nn.Module, params: list[nn.Parameter]) -> list[nn.Module] | None:
        """The modules the fused executor will patch, or None when this step uses the loop."""
        auto = self.executor == "auto"
        if self.executor == "loop" or not params or (auto and (self.num_perturbations == 1
                                                                 or params[0].device.type != "cuda")):
            return None
        modules = fusable_modules(unwrap(model), params)
        if modules is None and self.executor == "fused":
            raise ValueError("executor='fused': the perturbed parameters include some outside Conv2d, Linear and "
                             "normalisation layers; use executor='loop' or 'auto'")
        return modules

    def _fused_backward(self, model, inputs, targets, loss_fn, params, modules, gen, scaler, autocast_dtype):
        m_total = self.num_perturbations
        noises = [draw_noise(params, self.std, gen) for _ in range(m_total)]  # the loop's draw order
        deltas = [[(noise[i] * p.detach() if self.multiplicative else noise[i]) for noise in noises]
                  for i, p in enumerate(params)]
        with perturbed_copies(modules, deltas, m_total):
            loss = forward_loss(model, inputs, targets, loss_fn, autocast_dtype)
            run_backward(loss, scaler)
        return loss.detach()


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
