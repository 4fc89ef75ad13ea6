"""BatchNorm over the whole batch of every process: the official code's synced BatchNorm (pmap sync).

Used by every method under torch.distributed (and by the per-sub-batch executors on one process),
so N processes normalise over the global batch exactly as one process would.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def process_group() -> dist.ProcessGroup | None:
    """The default group when several processes run, else None (nothing to synchronise)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.group.WORLD
    return None


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Statistics of half-precision activations in float32; float64 stays float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes of ``group``; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = grad.clone()
        dist.all_reduce(out, group=ctx.group)
        return out, None


def _synced_batch_stats(x: torch.Tensor, group: dist.ProcessGroup) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and biased variance over the batch of every process (differentiable).

    Two passes (the mean, then the centred squares), which keeps float32 variances accurate.
    """
    dims = [0] + list(range(2, x.dim()))
    view = [1, -1] + [1] * (x.dim() - 2)
    xf = _at_least_float32(x)
    count = x.numel() // x.shape[1] * dist.get_world_size(group)
    mean = _AllReduceSum.apply(xf.sum(dims), group) / count
    var = _AllReduceSum.apply((xf - mean.view(view)).square().sum(dims), group) / count
    return mean, var, count


def whole_batch_norm(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor,
                     group: dist.ProcessGroup | None) -> torch.Tensor:
    """BatchNorm without its affine part, over the whole batch (of every process in ``group``).

    Running statistics are updated once, as ``nn.BatchNorm`` does (momentum, or the cumulative
    average when momentum is None).
    """
    training = module.training or module.running_mean is None
    factor = 0.0
    if module.training and module.track_running_stats and module.num_batches_tracked is not None:
        module.num_batches_tracked.add_(1)
        factor = 1.0 / float(module.num_batches_tracked) if module.momentum is None else module.momentum
    if group is None or not training:
        track = not module.training or module.track_running_stats
        return F.batch_norm(x, module.running_mean if track else None, module.running_var if track else None,
                            None, None, training, factor, module.eps)
    mean, var, count = _synced_batch_stats(x, group)
    if module.training and module.track_running_stats:
        with torch.no_grad():
            module.running_mean.lerp_(mean.to(module.running_mean.dtype), factor)
            module.running_var.lerp_((var * count / max(count - 1, 1)).to(module.running_var.dtype), factor)
    view = [1, -1] + [1] * (x.dim() - 2)
    return ((_at_least_float32(x) - mean.view(view)) * torch.rsqrt(var + module.eps).view(view)).to(x.dtype)
