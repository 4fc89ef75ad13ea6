"""The fused executor: all M perturbed sub-batches in one forward/backward.

Each perturbed module temporarily runs M weight copies side by side: convolutions as one grouped
convolution over the M sub-batches (groups = M x groups), linear layers as one batched matmul, and
normalisation layers as whole-batch normalisation followed by a per-sub-batch scale. So:

- BatchNorm statistics are computed over the whole batch (the reference's synced BN, paper.md §1.2);
  running statistics are updated once per step, from the perturbed forward.
- The weight copy of sub-batch m is ``w + delta_m.detach()`` (delta = w * eps for DAMP, eps for
  DAAP), whose Jacobian with respect to w is the identity: autograd accumulates
  sum_m dL/dw_m, the gradient *at* the perturbed weights without a chain-rule xi factor, exactly as
  the loop executor and the official code.
- The loss is the whole-batch mean = the mean of the M equal sub-batch means.

Supported perturbed modules: Conv2d, Linear, BatchNorm1d/2d, LayerNorm, GroupNorm. A model whose
selection includes anything else (e.g. nn.MultiheadAttention's bare q/k/v kernels) uses the loop.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

FUSABLE = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def fusable_modules(model: nn.Module, params: list[nn.Parameter]) -> list[nn.Module] | None:
    """The modules owning ``params`` (as their ``weight``), or None if any cannot be fused."""
    owner = {}
    for module in model.modules():
        weight = module._parameters.get("weight") if isinstance(module, FUSABLE) else None
        if weight is not None:
            owner[id(weight)] = module
    modules = []
    for p in params:
        module = owner.get(id(p))
        if module is None:
            return None
        modules.append(module)
    return modules


def _per_subbatch(x: torch.Tensor, m: int) -> torch.Tensor:
    """(M*b, ...) -> (M, b, ...)."""
    return x.reshape(m, x.shape[0] // m, *x.shape[1:])


def _conv_forward(module: nn.Conv2d, weights: torch.Tensor, m: int, x: torch.Tensor) -> torch.Tensor:
    """M convolutions with weights (M, O, C/g, kh, kw) on the M sub-batches of x, as one grouped conv."""
    if module.padding_mode != "zeros":
        raise ValueError("fused executor: only zero-padded convolutions")
    mb, c, h, w = x.shape
    b = mb // m
    stacked = x.reshape(m, b, c, h, w).transpose(0, 1).reshape(b, m * c, h, w)  # (b, M*C, H, W)
    out = F.conv2d(stacked, weights.reshape(-1, *weights.shape[2:]), None, module.stride, module.padding,
                   module.dilation, module.groups * m)
    o = weights.shape[1]
    out = out.reshape(b, m, o, *out.shape[-2:]).transpose(0, 1).reshape(mb, o, *out.shape[-2:])
    return out if module.bias is None else out + module.bias.view(1, -1, 1, 1)


def _linear_forward(module: nn.Linear, weights: torch.Tensor, m: int, x: torch.Tensor) -> torch.Tensor:
    """M linear maps (M, out, in) on the M sub-batches (any leading shape) as one batched matmul."""
    grouped = _per_subbatch(x, m)  # (M, b, ..., in)
    flat = grouped.reshape(m, -1, x.shape[-1])
    out = torch.bmm(flat, weights.transpose(1, 2).to(flat.dtype))  # (M, b*..., out)
    out = out.reshape(*grouped.shape[:-1], weights.shape[1]).reshape(*x.shape[:-1], weights.shape[1])
    return out if module.bias is None else out + module.bias


def _scale_shift(normalized: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None, m: int
                 ) -> torch.Tensor:
    """normalized * scale_m + bias for (N, C, ...) inputs, per-sub-batch scales (M, C)."""
    grouped = _per_subbatch(normalized, m)  # (M, b, C, ...)
    shape = [m] + [1] * (grouped.dim() - 1)
    shape[2] = scales.shape[1]
    out = grouped * scales.view(shape).to(grouped.dtype)
    if bias is not None:
        out = out + bias.view(shape[1:]).to(grouped.dtype)
    return out.reshape(normalized.shape)


def _batchnorm_forward(module: nn.modules.batchnorm._BatchNorm, scales: torch.Tensor, m: int,
                       x: torch.Tensor) -> torch.Tensor:
    """Whole-batch BatchNorm (as nn.BatchNorm's own forward computes its factor), per-sub-batch gamma."""
    factor = 0.0 if module.momentum is None else module.momentum
    if module.training and module.track_running_stats and module.num_batches_tracked is not None:
        module.num_batches_tracked.add_(1)
        factor = 1.0 / float(module.num_batches_tracked) if module.momentum is None else module.momentum
    use_batch = module.training or module.running_mean is None
    normalized = F.batch_norm(x, module.running_mean if not module.training or module.track_running_stats else None,
                              module.running_var if not module.training or module.track_running_stats else None,
                              None, None, use_batch, factor, module.eps)
    return _scale_shift(normalized, scales, module.bias, m)


def _layernorm_forward(module: nn.LayerNorm, scales: torch.Tensor, m: int, x: torch.Tensor) -> torch.Tensor:
    normalized = F.layer_norm(x, module.normalized_shape, None, None, module.eps)
    grouped = _per_subbatch(normalized, m)
    view = [m] + [1] * (grouped.dim() - 1 - len(module.normalized_shape)) + list(module.normalized_shape)
    out = grouped * scales.view(view).to(grouped.dtype)
    if module.bias is not None:
        out = out + module.bias.to(grouped.dtype)
    return out.reshape(x.shape)


def _groupnorm_forward(module: nn.GroupNorm, scales: torch.Tensor, m: int, x: torch.Tensor) -> torch.Tensor:
    normalized = F.group_norm(x, module.num_groups, None, None, module.eps)
    return _scale_shift(normalized, scales, module.bias, m)


def _fused_forward(module: nn.Module):
    if isinstance(module, nn.Conv2d):
        return _conv_forward
    if isinstance(module, nn.Linear):
        return _linear_forward
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _batchnorm_forward
    if isinstance(module, nn.LayerNorm):
        return _layernorm_forward
    return _groupnorm_forward


@contextlib.contextmanager
def perturbed_copies(modules: list[nn.Module], deltas: list[list[torch.Tensor]], m: int) -> Iterator[None]:
    """Within the block, module i runs M weight copies ``w + deltas[i][k].detach()`` on sub-batch k.

    Args:
        modules: the modules whose ``weight`` is perturbed.
        deltas: per module, M perturbations shaped like its weight.
        m: number of sub-batches (the batch must be ordered sub-batch-major).
    """
    patched = []
    try:
        for module, delta in zip(modules, deltas):
            weights = module.weight.unsqueeze(0) + torch.stack(delta).detach().to(module.weight.dtype)  # (M, ...)
            fn = _fused_forward(module)
            module.forward = types.MethodType(lambda self, x, fn=fn, w=weights: fn(self, w, m, x), module)
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward  # back to the class's forward
