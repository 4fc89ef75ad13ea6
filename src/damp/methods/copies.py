"""Copies of a parameter, one per sub-batch: the value every per-layer kernel runs on.

Shared by the noise methods (DAMP, DAAP, RWP), SAM/ASAM and the per-layer executor
(methods/layer_kernels.py), so the gradient contract of a copy is written once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class Copies(NamedTuple):
    """The M sub-batch values of one parameter: sub-batch k runs at ``values[k]`` ((M, *shape)).

    With ``base`` (the parameter), ``values`` carry no gradient and ``base.grad`` receives the sum
    over k of the gradients *at* ``values[k]``: the Jacobian of a copy with respect to ``base`` is
    the identity, so there is no chain-rule xi factor (paper Algorithm 1, line 9). Without ``base``
    the gradient goes to ``values`` itself, one per sub-batch (SAM's ascent pass), written into
    ``grad_buffer`` where one is given and a kernel can (the split kernels' weights, into a contiguous
    buffer of the gradient's shape and dtype; other kernels allocate): a caller that reuses its
    buffer then allocates no (M, *shape) gradient per step. The gradient autograd returns is then the
    buffer itself, overwritten by the backward; it serves a layer's first call in a pass only (the
    executor drops it for later calls of the same layer).
    """

    values: torch.Tensor
    base: torch.Tensor | None = None
    grad_buffer: torch.Tensor | None = None


def materialize(copies: Copies) -> torch.Tensor:
    """(M, *shape) copies that autograd differentiates as :class:`Copies` declares."""
    if copies.base is None:
        return copies.values
    return copies.values + (copies.base - copies.base.detach())  # + 0, with the identity Jacobian to base


def copies_of(module: nn.Module, copies: dict[str, Copies], name: str, m: int) -> Copies | None:
    """The copies of parameter ``name``, or the shared parameter as M views of it (None if unset)."""
    if name in copies:
        return copies[name]
    shared = getattr(module, name, None)
    return None if shared is None else Copies(shared.detach().expand(m, *shared.shape), shared)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a kernel on ``x`` computes in: the autocast dtype when autocast is on, else x's."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def same_for_all(values: torch.Tensor | None) -> bool:
    """Whether the M copies are one tensor expanded (SAM's ascent: every sub-batch at the clean weights)."""
    return values is None or values.shape[0] == 1 or values.stride(0) == 0


def layer_same_for_all(weight: Copies, copies: dict[str, Copies]) -> bool:
    """Whether a layer's weight and bias copies are all one tensor expanded (run it as one whole-batch layer)."""
    return same_for_all(weight.values) and same_for_all(copies["bias"].values if "bias" in copies else None)
