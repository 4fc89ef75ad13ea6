"""SAM (Foret et al. 2021) and ASAM (Kwon et al. 2021) as gradient estimators, with m-sharpness.

Per step, for each of M equal sub-batches (the official DAMP code's "split batch to simulate
m-sharpness", trungtrinh44/DAMP; paper §3): g = grad of the sub-batch loss at omega;
eps = rho * T^2 g / ||T g|| with the norm over *all* parameters (T = 1 for SAM; for ASAM
T = |w| + eta on the selected kernels and norm scales, 1 elsewhere, as in the official ASAM code
and DAMP's `build_ASAM_optimizer`); then accumulate grad L(omega + eps) / M. The weights are
restored bit-exactly afterwards.

BatchNorm (``batchnorm=``): "whole" (default) normalises over the whole batch of every process, as
the official CIFAR SAM/ASAM configs do: both passes run every parameter as M per-sub-batch copies
inside one forward (methods/subbatch.py), the ascent gradient of sub-batch m is the gradient with
respect to its copy, and the descent pass evaluates copy m at omega + eps_m. "ghost" normalises each
sub-batch separately (the official TinyImageNet and ImageNet SAM/ASAM configs) and runs the loop.
With rho = 0 the whole-batch gradient is exactly SGD's. Running statistics come from the first
(unperturbed) pass only; the second pass saves and restores them (davda54/sam#17).

DDP: the ascent gradient is each process's own (``torch.autograd.grad`` under ``no_sync``, so it
neither syncs nor touches ``.grad``); the descent backward all-reduces once. AMP: the ascent
direction is invariant to the loss scale, so scaled gradients are used as they are; a non-finite
ascent gradient propagates into the second gradient, which GradScaler then skips.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from damp.dist import unwrap
from damp.methods.base import (LossFn, Method, check_nonnegative, forward_loss, grad_sync, local_subbatches,
                               run_backward)
from damp.methods.perturb import (ParamSelector, frozen_batchnorm_stats, snapshot, split_batch,
                                  trainable_parameters)
from damp.methods.copies import Copies
from damp.methods.subbatch import SubBatchExecutor, check_modes, executor_for
from damp.methods.sync_batchnorm import process_group

# davda54/sam and the official ASAM code add this to the norm to avoid 0/0 at a stationary point.
NORM_EPS = 1e-12


def ascent_perturbation(grads: list[torch.Tensor], rho: float,
                        scales: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """SAM/ASAM ascent step ``eps_i = rho * T_i^2 g_i / (||T g|| + 1e-12)``, norm over all tensors.

    Args:
        grads: gradients g_i at omega (any shapes).
        rho: radius of the neighbourhood.
        scales: T_i per tensor (same shape as g_i), or None for T_i = 1 (None overall: SAM).

    Returns:
        The perturbations eps_i, one per gradient.

    >>> g = [torch.tensor([3.0, 4.0])]
    >>> ascent_perturbation(g, rho=1.0)[0]
    tensor([0.6000, 0.8000])
    """
    scales = scales if scales is not None else [None] * len(grads)
    scaled = [g if t is None else g * t for g, t in zip(grads, scales)]
    device = grads[0].device
    norms = torch._foreach_norm(scaled)  # one fused call for every tensor's norm
    # In float32 at least, as subbatch_ascent_points_ (float64 stays float64: the loop equals the
    # per-layer executors in float64).
    dtype = functools.reduce(torch.promote_types, [n.dtype for n in norms], torch.float32)
    norm = torch.linalg.vector_norm(torch.stack([n.to(device, dtype) for n in norms]))
    factor = rho / (norm + NORM_EPS)
    weighted = [s if t is None else s * t for s, t in zip(scaled, scales)]
    if all(w.device == device and w.dtype == weighted[0].dtype for w in weighted):
        return torch._foreach_mul(weighted, factor.to(weighted[0].dtype))
    return [w * factor.to(w.device, w.dtype) for w in weighted]


@torch.no_grad()
def subbatch_ascent_points_(out: list[torch.Tensor], params: list[torch.Tensor], grads: list[torch.Tensor],
                            rho: float, scales: list[torch.Tensor | None] | None = None) -> None:
    """``out[i][m] <- params[i] + eps_m``: :func:`ascent_perturbation` for M sub-batches at once, one norm per m.

    Args:
        out: per tensor, an (M, *shape) buffer, overwritten.
        params: per tensor, omega (*shape).
        grads: per tensor, the M sub-batch gradients (M, *shape); may be ``out`` itself.
        rho, scales: as for :func:`ascent_perturbation`.

    No (M, P) temporary is made: the norms are read from the gradients (or from T g, written into
    ``out``) and the point is one ``addcmul`` per tensor. ASAM's step on ResNet18 went from 2.34 to
    2.13 × SGD's (docs/performance.md, "Drawing the noise on every core, and SAM's ascent without
    temporaries").

    >>> out, w = [torch.empty(2, 2)], [torch.tensor([1.0, 1.0])]
    >>> subbatch_ascent_points_(out, w, [torch.tensor([[3.0, 4.0], [0.0, 2.0]])], rho=1.0)
    >>> out[0]
    tensor([[1.6000, 1.8000],
            [1.0000, 2.0000]])
    """
    scales = scales if scales is not None else [None] * len(grads)
    squares = []
    for buffer, g, t in zip(out, grads, scales):
        if t is not None:
            g = torch.mul(g, t, out=buffer)  # T g, in the output buffer
        # Norms in float32 at least (float64 stays float64, so reference checks are exact).
        total = torch.linalg.vector_norm(g.flatten(1), dim=1, dtype=torch.promote_types(g.dtype, torch.float32))
        squares.append(total.square())
    factor = rho / (torch.stack(squares).sum(0).sqrt() + NORM_EPS)  # (M,)
    for buffer, p, g, t in zip(out, params, grads, scales):
        if t is not None:
            g = buffer.mul_(t)  # T^2 g
        torch.addcmul(p, g.to(p.dtype), factor.view(-1, *[1] * p.dim()).to(p.dtype), out=buffer)


class SAM(Method):
    """Sharpness-aware minimisation, one ascent per sub-batch (m-sharpness).

    Args:
        rho: neighbourhood radius (paper: 0.045 CIFAR-10, 0.06 CIFAR-100, 0.05 ImageNet).
        num_perturbations: M equal sub-batches per batch, each with its own ascent direction.
        executor: "auto", "fused", "split" or "loop" (methods/subbatch.py; same math).
        batchnorm: "whole" (default) or "ghost" (BatchNorm per sub-batch).
    """

    def __init__(self, rho: float, num_perturbations: int = 1, *, params: ParamSelector | None = None,
                 executor: str = "auto", batchnorm: str = "whole") -> None:
        super().__init__(num_perturbations=num_perturbations, params=params)
        self.rho = check_nonnegative("rho", rho)
        check_modes(executor, batchnorm)
        self.executor, self.batchnorm = executor, batchnorm
        self._copies_cache: tuple | None = None  # scratch tensors of the per-layer passes, not state
        self._executors: dict = {}  # executor_for's cache of plans and executors

    def hparams(self) -> dict[str, Any]:
        return {"rho": self.rho, "num_perturbations": self.num_perturbations}

    def scales(self, model: nn.Module, params: list[nn.Parameter]) -> list[torch.Tensor | None] | None:
        """The per-tensor T of the ascent (None: plain SAM)."""
        return None

    def backward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn,
                 *, scaler: torch.amp.GradScaler | None = None,
                 autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        m_local = len(local_subbatches(self.num_perturbations))
        chunks = split_batch(inputs, targets, m_local)
        params = trainable_parameters(model)
        scales = self.scales(model, params)  # from the clean weights, the same for every sub-batch
        executor = executor_for(unwrap(model), params, self.executor, self.batchnorm, m_local, process_group(),
                                self._executors, inputs)
        if not isinstance(executor, SubBatchExecutor):
            return self._loop_backward(model, chunks, loss_fn, params, scales, scaler, autocast_dtype)
        clean, perturbed = self._copy_tensors(params, m_local)
        # Ascent pass: one gradient per sub-batch, with respect to its own copy of the clean weights.
        # The split kernels write a weight's M gradients into its descent buffer, which the ascent
        # point then overwrites in place: no (M, P) gradient is allocated per step.
        with executor.running([Copies(c, grad_buffer=b) for c, b in zip(clean, perturbed)]), \
                grad_sync(model, enabled=False):
            loss = forward_loss(model, inputs, targets, loss_fn, autocast_dtype)
            scaled_loss = scaler.scale(loss) if scaler is not None else loss
            grads = torch.autograd.grad(scaled_loss, clean, allow_unused=True)
        grads = [torch.zeros_like(c) if g is None else g for g, c in zip(grads, clean)]
        subbatch_ascent_points_(perturbed, [p.detach() for p in params], grads, self.rho, scales)
        del grads
        # Descent pass at omega + eps_m, the gradient summed into omega.
        with executor.running([Copies(b, p) for b, p in zip(perturbed, params)]), frozen_batchnorm_stats(model):
            run_backward(forward_loss(model, inputs, targets, loss_fn, autocast_dtype), scaler)
        return loss.detach()

    def _copy_tensors(self, params: list[nn.Parameter], m: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per parameter: M views of it (the ascent's per-copy leaves) and an (M, *shape) descent buffer.

        Made once per parameter list and reused, so ``torch.compile`` sees the same tensors every
        step; the views follow the parameters' in-place updates by the optimizer.
        """
        key = (tuple(id(p) for p in params), m)
        if self._copies_cache is None or self._copies_cache[0] != key:
            clean = [p.detach().expand(m, *p.shape).requires_grad_() for p in params]
            perturbed = [torch.empty(m, *p.shape, dtype=p.dtype, device=p.device) for p in params]
            self._copies_cache = (key, clean, perturbed)
        return self._copies_cache[1], self._copies_cache[2]

    def _loop_backward(self, model, chunks, loss_fn, params, scales, scaler, autocast_dtype) -> torch.Tensor:
        """M sub-batch passes at in-place perturbed weights (BatchNorm per sub-batch)."""
        losses = []
        with snapshot(params) as clean:
            for m, (x, y) in enumerate(chunks):
                if m:
                    clean.restore()
                with grad_sync(model, enabled=False):
                    loss = forward_loss(model, x, y, loss_fn, autocast_dtype)
                    scaled_loss = scaler.scale(loss) if scaler is not None else loss
                    grads = torch.autograd.grad(scaled_loss, params, allow_unused=True)
                used = [i for i, g in enumerate(grads) if g is not None]
                eps = ascent_perturbation([grads[i] for i in used], self.rho,
                                          None if scales is None else [scales[i] for i in used])
                with torch.no_grad():
                    torch._foreach_add_([params[i] for i in used],
                                        [e.to(params[i].dtype) for i, e in zip(used, eps)])
                with frozen_batchnorm_stats(model), grad_sync(model, enabled=m == len(chunks) - 1):
                    perturbed_loss = forward_loss(model, x, y, loss_fn, autocast_dtype)
                    run_backward(perturbed_loss / len(chunks), scaler)
                losses.append(loss.detach())
        return torch.stack(losses).mean()


class ASAM(SAM):
    """Adaptive SAM with the official scaling T = |w| + eta on kernels and norm scales.

    Paper §3 shows this is first-order optimisation under adversarial multiplicative perturbations.

    Args:
        rho: radius (paper: 1.0 CIFAR-10, 2.0 CIFAR-100, 1.5 ImageNet).
        eta: offset of T (0.0 in every official DAMP config).
        num_perturbations: M sub-batches, each with its own ascent.
        executor, batchnorm: as for :class:`SAM`.
    """

    def __init__(self, rho: float, eta: float = 0.0, num_perturbations: int = 1, *,
                 params: ParamSelector | None = None, executor: str = "auto", batchnorm: str = "whole") -> None:
        super().__init__(rho, num_perturbations, params=params, executor=executor, batchnorm=batchnorm)
        self.eta = check_nonnegative("eta", eta)

    def hparams(self) -> dict[str, Any]:
        return {"rho": self.rho, "eta": self.eta, "num_perturbations": self.num_perturbations}

    def scales(self, model: nn.Module, params: list[nn.Parameter]) -> list[torch.Tensor | None]:
        adaptive = {id(p) for _, p in self.select_params(model)}
        return [p.detach().abs().add(self.eta) if id(p) in adaptive else None for p in params]
