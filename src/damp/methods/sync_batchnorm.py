"""BatchNorm over the whole batch of every process, with an optional scale and shift per sub-batch.

The official code normalises over the whole batch of all devices (its `sync_batch_norm: true`), also
while DAMP, DAAP, SAM and ASAM run each sub-batch at its own weights. :class:`SubBatchBatchNorm` does
that in one autograd function: whole-batch statistics (all-reduced over a process group), then
``y = x * a_m + b_m`` for sub-batch m with ``a_m = gamma_m / sqrt(var + eps)``, one fused pass
instead of a normalisation pass and a per-sub-batch affine pass. Its backward is the BatchNorm
backward with the sub-batch scales folded in (two passes). On eager CUDA the passes are BatchNorm's
own kernels (statistics, elementwise, backward reduce and elementwise); on eager CPU the statistics
are BatchNorm's own kernel on one process; the other passes, and every pass under
``torch.compile``, are generic elementwise passes, which promote half precision per element (no
float32 copy of an activation first). SGD under torch.distributed uses the same function with
one sub-batch (:func:`synced_batchnorm`).
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from damp.methods.split_kernels import is_channels_last


def process_group() -> dist.ProcessGroup | None:
    """The default group when several processes run, else None (nothing to synchronise)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.group.WORLD
    return None


def _accumulate_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype BatchNorm's sums and per-channel terms use: float32 for half-precision ``x``, else x's.

    Half-precision activations are never converted to a float32 copy before a pass (on a GPU each
    conversion is one more pass over the activation): reductions accumulate in float32 and
    elementwise passes promote per element.
    """
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


# Eager CUDA runs BatchNorm's own kernels (statistics, elementwise, backward); False forces the generic
# passes everywhere, for A/B timings (benchmarks/gpu_profile.py --batchnorm-kernels generic).
NATIVE_CUDA_KERNELS = True
# On CPU, BatchNorm's own statistics kernel (float32/float64, eager, one process); False runs the generic
# passes, for A/B timings (benchmarks/kernel_ab.py --change statistics).
NATIVE_CPU_STATISTICS = True


def _native_cuda(x: torch.Tensor) -> bool:
    """Whether BatchNorm's CUDA kernels apply: eager CUDA. Under ``torch.compile`` the generic passes,
    which inductor fuses (the CUDA-only kernels have no fake-tensor implementation to trace)."""
    return NATIVE_CUDA_KERNELS and x.is_cuda and not torch.compiler.is_compiling()


def _native_cpu(x: torch.Tensor) -> bool:
    """Whether BatchNorm's CPU statistics kernel applies: eager, float32 or float64 (it keeps x's dtype)."""
    return (NATIVE_CPU_STATISTICS and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.compiler.is_compiling())


def _all_reduce(tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    if group is not None:
        dist.all_reduce(tensor, group=group)
    return tensor


# In the generic passes on CPU (several processes, half precision, compile) the centred squares are
# summed over slices of about this many bytes: a larger temporary is faulted in afresh every step
# (32 MiB: 16 ms in one piece, 2.6 ms in four), a smaller slice only adds operator calls (6 MiB:
# 0.30 ms in one piece, 0.52 ms in eight). Measured on the CI class of machine.
CPU_PIECE_BYTES = 8 * 2**20


def statistics_pieces(x: torch.Tensor) -> int:
    """How many slices :func:`batch_statistics` sums over: one on a GPU (each slice is a launch)."""
    if x.device.type != "cpu":
        return 1
    return max(1, math.ceil(x.numel() * x.element_size() / CPU_PIECE_BYTES))


def batch_statistics(x: torch.Tensor, group: dist.ProcessGroup | None, pieces: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and biased variance of (B, C, *) ``x`` over the batch of every process, and the count.

    Two passes (the mean, then the centred squares), which keeps float32 variances accurate. The
    centred squares are summed over ``pieces`` slices of the batch (default :func:`statistics_pieces`),
    so their temporary stays small; ``torch.var_mean`` is 2-10x slower. Without a group and without
    ``pieces``, BatchNorm's own statistics kernels run instead: eager CUDA's one-pass (Welford) kernel,
    and on CPU, for float32/float64 ``x``, the kernel ``nn.BatchNorm`` trains with (the same mean, bit
    for bit; several times faster than the generic passes: docs/performance.md, "BatchNorm statistics").
    """
    dims = [0, *range(2, x.dim())]
    count = x.numel() // x.shape[1] * (dist.get_world_size(group) if group is not None else 1)
    if _native_cpu(x) and group is None and pieces is None:
        mean, var = torch.batch_norm_update_stats(x, None, None, 0.0)
        return mean, var, count
    if _native_cuda(x) and group is None:  # float32 statistics for half-precision x
        mean, invstd = torch.batch_norm_stats(x, 0.0)
        invstd = invstd.to(_accumulate_dtype(x))
        # With eps = 0 the kernel reports a constant channel (variance 0) as invstd = 0, not inf.
        return mean.to(invstd.dtype), torch.where(invstd > 0, invstd.pow(-2), 0.0), count
    mean = _all_reduce(x.sum(dims, dtype=_accumulate_dtype(x)), group) / count
    centre = mean.view(1, -1, *[1] * (x.dim() - 2))
    pieces = statistics_pieces(x) if pieces is None else pieces
    if pieces == 1:  # x - centre promotes half-precision x to float32 per element
        squares = (x - centre).square_().sum(dims)
    else:
        squares = sum((piece - centre).square_().sum(dims) for piece in x.chunk(pieces))
    return mean, _all_reduce(squares, group) / count, count


def _grouped(t: torch.Tensor, m: int, channels_last: bool) -> torch.Tensor:
    """(B, C, *) ``t`` as (M, b, ...) in memory order: (M, b, *, C) when channels-last, else (M, b, C, *).

    A dense tensor's grouping is then a contiguous view, which ``out=`` may write through without
    ``torch.compile`` breaking the graph (it refuses non-contiguous ``out=`` tensors).
    """
    if channels_last:
        t = t.permute(0, *range(2, t.dim()), 1)
    return t.reshape(m, t.shape[0] // m, *t.shape[1:])


def _ungrouped(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The inverse of :func:`_grouped`: (B, C, *) again."""
    t = t.reshape(-1, *t.shape[2:])
    return t.permute(0, t.dim() - 1, *range(1, t.dim() - 1)) if channels_last else t


def _channel_terms(coef: torch.Tensor, dims: int, channels_last: bool) -> torch.Tensor:
    """(M, C) or (C,) per-channel terms, broadcastable against a :func:`_grouped` tensor of ``dims`` + 1 dims."""
    m, c = (coef.shape[0] if coef.dim() == 2 else 1), coef.shape[-1]
    ones = [1] * (dims - 2)
    return coef.view(m, 1, *ones, c) if channels_last else coef.view(m, 1, c, *ones)


def _normalize(x: torch.Tensor, gamma: torch.Tensor, shift: torch.Tensor | None, mean: torch.Tensor,
               rstd: torch.Tensor) -> torch.Tensor:
    """``(x - mean) * rstd * gamma[k] + shift[k]`` on sub-batch k; (M, C) gamma and shift; x's dtype and layout.

    On CUDA, eagerly, BatchNorm's own elementwise kernel per sub-batch (float32 math on half-precision
    x, vectorised for channels_last); a generic mixed-dtype pass is several times slower there. Under
    ``torch.compile`` the generic pass, which inductor fuses.
    """
    m = gamma.shape[0]
    y = torch.empty_like(x)  # written through views, returned whole: a custom Function's output is no view
    if _native_cuda(x):
        for k, (xk, yk) in enumerate(zip(x.chunk(m), y.chunk(m))):
            torch.batch_norm_elemt(xk, gamma[k], None if shift is None else shift[k], mean, rstd, 0.0, out=yk)
        return y
    last = is_channels_last(x)
    a = gamma * rstd  # (M, C)
    b = (shift if shift is not None else 0) - mean * a
    torch.addcmul(_channel_terms(b, x.dim(), last), _grouped(x, m, last), _channel_terms(a, x.dim(), last),
                  out=_grouped(y, m, last))
    return y


def _input_grad(g: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                sum_h: torch.Tensor, sum_h_xhat: torch.Tensor, count: int, last: bool) -> torch.Tensor:
    """dL/dx = rstd * (h - sum_h / N - x_hat * sum_h_xhat / N), h = gamma[k] * g on sub-batch k (N = count).

    ``sum_h`` and ``sum_h_xhat`` are the whole batch's sums of h and h * x_hat (zero in eval mode).
    The result has x's dtype and layout; ``last`` says whether x is channels_last (known from the forward:
    dynamo cannot trace a layout query on a saved tensor in the backward).
    """
    m, dims = gamma.shape[0], x.dim()
    if _native_cuda(x):  # h in x's dtype (one pass), then BatchNorm's own backward kernel (float32 math)
        h = torch.empty_like(x)
        torch.mul(_grouped(g, m, last), _channel_terms(gamma, dims, last), out=_grouped(h, m, last))
        counts = torch.full((1,), count, dtype=torch.int32, device=x.device)
        return torch.batch_norm_backward_elemt(h, x, mean, rstd, None, sum_h, sum_h_xhat / rstd, counts)
    coef_x = -rstd.square() * sum_h_xhat / count
    const = -rstd * sum_h / count - coef_x * mean
    # Two passes: the x term in the accumulation dtype, then the g term, written in x's dtype and layout:
    # in place when the dtypes agree (a second activation-sized buffer is faulted in afresh every step).
    x_term = torch.addcmul(_channel_terms(const, dims, last), _grouped(x, m, last),
                           _channel_terms(coef_x, dims, last))
    g_term = (_grouped(g, m, last), _channel_terms(gamma * rstd, dims, last))
    if x_term.dtype == x.dtype:
        return _ungrouped(x_term.addcmul_(*g_term), last)
    grad_x = torch.empty_like(x)
    torch.addcmul(x_term, *g_term, out=_grouped(grad_x, m, last))
    return grad_x


class SubBatchBatchNorm(torch.autograd.Function):
    """``(x - mean) / sqrt(var + eps) * scale[m] + shift[m]`` for sub-batch m of (B, C, *) ``x``.

    ``scale`` and ``shift`` are (M, C) (one row per sub-batch, B divisible by M), or None. With
    ``stats=None`` the mean and variance are the whole batch's (every process of ``group``), and the
    gradient flows through them; otherwise ``stats = (mean, var)`` are constants (eval mode).
    Returns ``(y, mean, var, count)``; only ``y`` is differentiable.
    """

    @staticmethod
    def forward(ctx, x, scale, shift, eps, stats, group):
        acc, c = _accumulate_dtype(x), x.shape[1]
        m = 1 if scale is None and shift is None else (scale if scale is not None else shift).shape[0]
        if stats is None:
            mean, var, count = batch_statistics(x, group)
        else:
            mean, var, count = stats[0].to(acc, copy=True), stats[1].to(acc, copy=True), 0
        rstd = torch.rsqrt(var + eps)
        gamma = scale.to(acc) if scale is not None else x.new_ones(m, c, dtype=acc)
        y = _normalize(x, gamma, None if shift is None else shift.to(acc), mean, rstd)
        ctx.save_for_backward(x, gamma, mean, rstd)
        ctx.batch_stats, ctx.group, ctx.count, ctx.channels_last = stats is None, group, count, is_channels_last(x)
        ctx.has_scale, ctx.has_shift = scale is not None, shift is not None
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var, count

    @staticmethod
    def backward(ctx, grad_y, _mean, _var, _count):
        x, gamma, mean, rstd = ctx.saved_tensors
        m, c = gamma.shape
        grad_y = grad_y.to(x.dtype)
        # Per sub-batch m: shift_grad[m] = sum of g, scale_grad[m] = sum of g * x_hat, from
        # BatchNorm's own backward kernel on each slice (one pass, no temporary, float32 sums for
        # half-precision slices). The weight only enters grad_input, which is not asked for, but the
        # CUDA kernel needs a defined one, in the statistics' dtype.
        ones = mean.new_ones(c)
        sums = [torch.ops.aten.native_batch_norm_backward(gk, xk, ones, None, None, mean, rstd, True, 0.0,
                                                          [False, True, True])[1:]
                for gk, xk in zip(grad_y.chunk(m), x.chunk(m))]
        scale_grad = torch.stack([t for t, _ in sums])  # (M, C)
        shift_grad = torch.stack([s for _, s in sums])
        if ctx.batch_stats:  # the statistics depend on every sample: BatchNorm's two correction sums
            sums = torch.stack([(gamma * shift_grad).sum(0), (gamma * scale_grad).sum(0)])
            sum_h, sum_h_xhat = _all_reduce(sums, ctx.group)
        else:
            sum_h = sum_h_xhat = torch.zeros_like(rstd)
        grad_x = _input_grad(grad_y, x, gamma, mean, rstd, sum_h, sum_h_xhat, max(ctx.count, 1),
                             ctx.channels_last)
        return (grad_x, scale_grad if ctx.has_scale else None,
                shift_grad if ctx.has_shift else None, None, None, None)


def subbatch_batch_norm(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, scale: torch.Tensor | None,
                        shift: torch.Tensor | None, group: dist.ProcessGroup | None) -> torch.Tensor:
    """``module``'s BatchNorm on (B, C, *) ``x`` with (M, C) scales and shifts, whole-batch statistics.

    Running statistics are updated once, as ``nn.BatchNorm`` does (momentum, or the cumulative
    average when momentum is None).
    """
    batch_stats = module.training or module.running_mean is None
    factor = 0.0
    if module.training and module.track_running_stats and module.num_batches_tracked is not None:
        module.num_batches_tracked.add_(1)
        factor = 1.0 / float(module.num_batches_tracked) if module.momentum is None else module.momentum
    stats = None if batch_stats else (module.running_mean, module.running_var)
    y, mean, var, count = SubBatchBatchNorm.apply(x, scale, shift, module.eps, stats, group)
    if batch_stats and module.training and module.track_running_stats:
        with torch.no_grad():
            module.running_mean.lerp_(mean.to(module.running_mean.dtype), factor)
            module.running_var.lerp_((var * count / max(count - 1, 1)).to(module.running_var.dtype), factor)
    return y


def _synced_forward(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor,
                    group: dist.ProcessGroup) -> torch.Tensor:
    scale = None if module.weight is None else module.weight.unsqueeze(0)
    shift = None if module.bias is None else module.bias.unsqueeze(0)
    return subbatch_batch_norm(module, x, scale, shift, group)


@contextlib.contextmanager
def synced_batchnorm(model: nn.Module, group: dist.ProcessGroup | None) -> Iterator[None]:
    """Within the block, every BatchNorm of ``model`` normalises over the batch of all of ``group``.

    A no-op without a group: ``nn.BatchNorm`` already normalises over this process's batch.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if group else []
    try:
        for module in norms:
            module.forward = types.MethodType(lambda self, x: _synced_forward(self, x, group), module)
        yield
    finally:
        for module in norms:
            del module.forward
