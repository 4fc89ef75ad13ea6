"""The method protocol: a method is a gradient estimator, not an optimizer wrapper.

``loss = method.backward(model, inputs, targets, loss_fn)`` runs the forward/backward passes the
method needs, *accumulates* into every ``p.grad`` the gradient the optimizer should apply (like
``Tensor.backward``: the caller zero-grads first), returns the detached mean loss as a 0-dim
tensor, and leaves every parameter bit-identical to before, also when the model or ``loss_fn``
raises. The training loop keeps nanoGPT's order, so any ``torch.optim`` optimizer, scheduler,
gradient clipping and ``GradScaler`` compose unchanged::

    optimizer.zero_grad(set_to_none=True)
    loss = method.backward(model, x, y, loss_fn, scaler=scaler)
    scaler.unscale_(optimizer); clip_grad_norm_(...); scaler.step(optimizer); scaler.update()
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from damp.methods.perturb import ParamSelector, perturbed_parameters

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_nonnegative(name: str, value: Any) -> float:
    """torch.optim-style validation: a finite real number >= 0, else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0 \
            or value == float("inf"):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number >= 0)")
    return float(value)


def check_count(name: str, value: Any) -> int:
    """A positive integer, else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r} (must be an integer >= 1)")
    return int(value)


def local_subbatches(num_perturbations: int) -> range:
    """The global indices of this process's sub-batches: M / world consecutive ones from rank * M / world.

    M counts the sub-batches of the global batch (the paper's M), which the processes hold in rank
    order, so sub-batch m has the same samples and the same noise on 1 or N processes.

    Raises:
        ValueError: if M is not divisible by the number of processes.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() \
        else (0, 1)
    if num_perturbations % world:
        raise ValueError(f"num_perturbations={num_perturbations} is not divisible by the {world} processes")
    per_process = num_perturbations // world
    return range(rank * per_process, (rank + 1) * per_process)


def grad_sync(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """``model.no_sync()`` when ``enabled`` is False and the model is DDP-wrapped, else a no-op.

    The forward must run inside ``no_sync`` too for DDP to skip the all-reduce (davda54/sam#78).
    """
    if not enabled and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def forward_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn,
                 autocast_dtype: torch.dtype | None) -> torch.Tensor:
    """``loss_fn(model(inputs), targets)``, under autocast when a dtype is given.

    Half-precision losses are upcast to float32; float32/float64 stay as they are.
    """
    context = (torch.autocast(inputs.device.type, dtype=autocast_dtype) if autocast_dtype is not None
               else contextlib.nullcontext())
    with context:
        loss = loss_fn(model(inputs), targets)
    return loss if loss.dtype in (torch.float32, torch.float64) else loss.float()


def run_backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    """``loss.backward()``, through the GradScaler when one is given."""
    (scaler.scale(loss) if scaler is not None else loss).backward()


class Method:
    """Base class of every training method (the only base class of this concept).

    Subclasses implement :meth:`backward`. Between steps they keep no state but what
    :meth:`state_dict` returns, and scratch tensors reused by the next step (noise buffers).

    Args:
        num_perturbations: M, the number of equal sub-batches the global batch is split into; each
            gets its own perturbation. Under DDP each of the N processes holds M / N of them.
        params: optional selector ``model -> [(name, parameter)]`` choosing the perturbed (DAMP,
            DAAP) or adaptively scaled (ASAM) parameters; defaults to :func:`perturbed_parameters`.
    """

    def __init__(self, *, num_perturbations: int = 1, params: ParamSelector | None = None) -> None:
        self.num_perturbations = check_count("num_perturbations", num_perturbations)
        self.select_params: ParamSelector = params if params is not None else perturbed_parameters

    def backward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn,
                 *, scaler: torch.amp.GradScaler | None = None,
                 autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Accumulate this method's gradient into ``p.grad`` and return the detached mean loss.

        Args:
            model: the network (optionally DDP-wrapped), in train mode.
            inputs: (B, ...) batch; B must be divisible by ``num_perturbations``.
            targets: (B, ...) targets, split along dim 0 with the inputs.
            loss_fn: ``loss_fn(outputs, targets) -> scalar`` mean loss of a (sub-)batch.
            scaler: optional ``GradScaler``; losses are scaled before each backward.
            autocast_dtype: run forwards under ``torch.autocast`` with this dtype.

        Returns:
            0-dim detached float32 tensor: the mean loss over the batch (no host sync).
        """
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        """The hyperparameters, as accepted by :func:`damp.methods.build`."""
        return {"num_perturbations": self.num_perturbations}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the method's randomness after a resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def __repr__(self) -> str:
        args = [f"{k}={v!r}" for k, v in self.hparams().items()]
        args += [f"{k}={getattr(self, k)!r}" for k, default in (("executor", "auto"), ("batchnorm", "whole"))
                 if getattr(self, k, default) != default]
        return f"{type(self).__name__}({', '.join(args)})"
