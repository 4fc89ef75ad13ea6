"""DAMP (multiplicative weight noise, paper Algorithm 1) and DAAP (additive, paper Algorithm 3).

Per step: split the batch into M equal sub-batches; for sub-batch m draw xi_m per element of every
perturbed parameter, evaluate the gradient of that sub-batch's loss *with respect to the weights at
the perturbed point* (omega * xi_m for DAMP, omega + xi_m for DAAP), and average over m. As in the
paper (line 9) and the official JAX code (`jax.value_and_grad` applied to the noisy tree), there is
**no chain-rule xi factor**: the gradient is dL/dw evaluated at w = omega * xi. Weight decay is the
optimizer's business and acts on the clean omega, which is restored bit-exactly after the step.

BatchNorm (``batchnorm=``): "whole" (default) normalises over the whole batch of every process, as
the official code's synced BatchNorm; running statistics are updated once per step, by the
perturbed forward. "ghost" normalises each sub-batch separately (the official SAM/ASAM configs on
TinyImageNet and ImageNet); it runs the loop executor.

Executors (``executor=``) are implementation strategies of the same math (methods/subbatch.py):
"fused" (grouped convolutions, batched matmuls: CUDA), "split" (M kernels per layer), "loop"
(M forward/backward passes at in-place perturbed weights, restored bit-exactly: any model, but
BatchNorm per sub-batch, so only for models without BatchNorm or with batchnorm="ghost"), and
"auto" (default: fused on CUDA; on CPU fused or split per layer, checked on the first batch for a
model without BatchNorm, which keeps the loop where they do not fit).
The M weight copies are written into the noise buffer itself, which is reused across steps.

Noise: sub-batch m of step t draws from a generator keyed by (seed, t, m), m its index in the global
batch, so the noise does not depend on the number of processes (docs/fidelity.md, "Processes and
randomness").
DDP: the per-layer executors all-reduce once; in the loop, the backward passes of all sub-batches
but the last run under ``no_sync()``.
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any

import torch
from torch import nn

from damp import seeding
from damp.dist import unwrap
from damp.methods.base import (LossFn, Method, check_nonnegative, forward_loss, grad_sync, local_subbatches,
                               run_backward)
from damp.methods.perturb import ParamSelector, snapshot, split_batch
from damp.methods.copies import Copies
from damp.methods.subbatch import SubBatchExecutor, check_modes, executor_for
from damp.methods.sync_batchnorm import process_group


def noise_views(buffer: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per tensor of ``params``, its (M, *shape) view of an (M, P) buffer, in order."""
    chunks = buffer.split([p.numel() for p in params], dim=1)
    return [chunk.view(buffer.shape[0], *p.shape) for chunk, p in zip(chunks, params)]


# A CPU normal_ runs on one core, so fill_normal_ hands rows to other threads, but only for a buffer
# of at least this many elements (about 15 ms of drawing on one core). After a training step,
# OpenMP's worker thread spins on the other core for some milliseconds, and a shorter shared draw
# gains nothing (docs/performance.md, "Drawing the noise on every core, and SAM's ascent without
# temporaries").
PARALLEL_DRAW_MIN_ELEMENTS = 1 << 22
_draw_pool: tuple[int, int, concurrent.futures.ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def _fill_rows(rows: torch.Tensor, std: float, generators: list[torch.Generator]) -> None:
    for row, gen in zip(rows, generators):
        row.normal_(0.0, std, generator=gen)


def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's draw threads (made again after a fork, whose child has none of its parent's threads)."""
    global _draw_pool
    if _draw_pool is None or _draw_pool[:2] != (os.getpid(), workers):
        if _draw_pool is not None and _draw_pool[0] == os.getpid():
            _draw_pool[2].shutdown(wait=False)  # the thread count changed: let the old threads go
        _draw_pool = (os.getpid(), workers, concurrent.futures.ThreadPoolExecutor(workers, "damp-noise"))
    return _draw_pool[2]


def fill_normal_(buffer: torch.Tensor, std: float, generators: list[torch.Generator]) -> None:
    """Row m of the (M, P) ``buffer`` <- one flat N(0, std^2) draw from ``generators[m]``.

    On CPU, a buffer of :data:`PARALLEL_DRAW_MIN_ELEMENTS` or more has its rows drawn on as many
    threads as torch's intra-op count at once (a pool of its own beside OpenMP's): row m depends
    only on its own generator, so the values are the same as one after another, bit for bit.
    """
    threads = min(torch.get_num_threads(), len(generators))
    if buffer.device.type != "cpu" or threads < 2 or buffer.numel() < PARALLEL_DRAW_MIN_ELEMENTS:
        _fill_rows(buffer, std, generators)
        return
    pool = _pool(threads - 1)  # the calling thread draws a share too
    shares = [pool.submit(_fill_rows, buffer[t::threads], std, generators[t::threads]) for t in range(1, threads)]
    try:
        _fill_rows(buffer[0::threads], std, generators[0::threads])
    finally:  # no share may still be writing into the buffer when this returns or raises
        concurrent.futures.wait(shares)
    for share in shares:
        share.result()


def draw_noise(params: list[torch.Tensor], std: float, generators: list[torch.Generator]) -> list[torch.Tensor]:
    """N(0, std^2) noise for M sub-batches: row m of one (M, P) float32 buffer comes from ``generators[m]``.

    Returns, per tensor of ``params``, an (M, *shape) view of the buffer, so the M perturbed copies
    are built without stacking. Each row is one flat draw over all P elements in order, so sub-batch
    m's noise depends only on its generator and the parameter sizes.
    """
    buffer = torch.empty(len(generators), sum(p.numel() for p in params), device=generators[0].device,
                         dtype=torch.float32)
    fill_normal_(buffer, std, generators)
    return noise_views(buffer, params)


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

    multiplicative = True

    def __init__(self, std: float, num_perturbations: int = 1, seed: int | None = None, *,
                 params: ParamSelector | None = None, executor: str = "auto", batchnorm: str = "whole") -> None:
        super().__init__(num_perturbations=num_perturbations, params=params)
        self.std = check_nonnegative("std", std)
        check_modes(executor, batchnorm)
        self.executor, self.batchnorm = executor, batchnorm
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"Invalid seed: {seed!r} (must be a non-negative integer or None)")
        # No global RNG: an unseeded method takes fresh OS entropy, recorded in state_dict().
        self.seed = seeding.entropy_seed() if seed is None else seed
        self.step = 0
        # Views of the (M, P) noise buffer, reused across steps (allocating 8 x the weights every
        # step costs page faults on a CPU); scratch space, not state.
        self._buffer: torch.Tensor | None = None
        self._views: list[torch.Tensor] = []
        self._executors: dict = {}  # executor_for's cache of plans and executors

    def hparams(self) -> dict[str, Any]:
        return {"std": self.std, "num_perturbations": self.num_perturbations, "seed": self.seed}

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.step = int(state["step"])

    def draw(self, params: list[torch.Tensor], subbatches: range, device: torch.device) -> list[torch.Tensor]:
        """(M, *shape) noise per parameter; row m is a pure function of (seed, step, global sub-batch m).

        The views share one buffer that the next call overwrites.
        """
        shape = (len(subbatches), sum(p.numel() for p in params))
        if self._buffer is None or self._buffer.shape != shape or self._buffer.device != torch.device(device) \
                or [v.shape[1:] for v in self._views] != [p.shape for p in params]:
            self._buffer = torch.empty(shape, device=device)
            self._views = noise_views(self._buffer, params)  # the same objects every step: compile guards on them
        fill_normal_(self._buffer, self.std,
                     [seeding.generator(device, self.seed, seeding.NOISE, self.step, m) for m in subbatches])
        return self._views

    @torch.no_grad()
    def copies(self, params: list[torch.Tensor], noise: list[torch.Tensor]) -> list[Copies]:
        """The M perturbed values of each parameter, w + w * eps (DAMP) or w + eps (DAAP).

        Written into the noise buffer itself where the dtypes allow (no new (M, P) tensor). The
        copies carry no gradient: ``base`` receives the sum of the gradients *at* the M copies.
        """
        out = []
        for p, eps in zip(params, noise):
            values = eps if eps.dtype == p.dtype and eps.device == p.device else eps.to(p)
            w = p.detach()
            if self.multiplicative:
                torch.addcmul(w, values, w, out=values)  # w + eps * w in one pass, in place
            else:
                values.add_(w)
            out.append(Copies(values, p))
        return out

    def backward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn,
                 *, scaler: torch.amp.GradScaler | None = None,
                 autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        subbatches = local_subbatches(self.num_perturbations)
        chunks = split_batch(inputs, targets, len(subbatches))
        params = [p for _, p in self.select_params(model)]
        device = params[0].device if params else inputs.device
        executor = executor_for(unwrap(model), params, self.executor, self.batchnorm, len(subbatches),
                                process_group(), self._executors, inputs)
        noise = self.draw(params, subbatches, device)
        self.step += 1
        if isinstance(executor, SubBatchExecutor):
            with executor.running(self.copies(params, noise)):
                loss = forward_loss(model, inputs, targets, loss_fn, autocast_dtype)
                run_backward(loss, scaler)
            return loss.detach()
        perturb_ = perturb_multiplicative_ if self.multiplicative else perturb_additive_
        losses = []
        with snapshot(params) as clean:
            for k, (x, y) in enumerate(chunks):
                if k:
                    clean.restore()
                perturb_(params, [eps[k] for eps in noise])
                with grad_sync(model, enabled=k == len(chunks) - 1):
                    loss = forward_loss(model, x, y, loss_fn, autocast_dtype)
                    # Equal sub-batches: the mean of the M sub-batch means is the batch mean.
                    run_backward(loss / len(chunks), scaler)
                losses.append(loss.detach())
        return torch.stack(losses).mean()


class DAMP(WeightNoise):
    """DAMP: gradients at multiplicatively perturbed weights, xi ~ N(1, std^2) (paper Algorithm 1).

    Args:
        std: sigma of the multiplicative noise (paper: 0.1-0.25).
        num_perturbations: M equal sub-batches per batch, one noise draw each (paper: 8).
        seed: seed of the method's own noise stream (combined with the step and the sub-batch index).
        params: selector of the perturbed parameters (default: kernels and norm scales).
        executor: "auto", "fused", "split" or "loop": how the M sub-batches run (same math).
        batchnorm: "whole" (default, the official synced BatchNorm) or "ghost" (per sub-batch).

    >>> model = nn.Linear(3, 2)
    >>> w = model.weight.detach().clone()
    >>> loss = DAMP(std=0.2, num_perturbations=2, seed=0).backward(
    ...     model, torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), nn.functional.cross_entropy)
    >>> bool(torch.equal(model.weight, w)), model.weight.grad.shape
    (True, torch.Size([2, 3]))
    """

    multiplicative = True


class DAAP(WeightNoise):
    """DAAP: the additive baseline, gradients at omega + xi with xi ~ N(0, std^2) (paper Algorithm 3)."""

    multiplicative = False
