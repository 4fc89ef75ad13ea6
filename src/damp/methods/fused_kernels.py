"""The "fused" layer kernels: all M sub-batches of a layer in one grouped convolution or one batched matmul."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from damp.methods.copies import compute_dtype, copies_of, layer_same_for_all, materialize
from damp.methods.split_kernels import WeightGrads, is_channels_last, layout, split_conv, split_linear

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _stack_subbatches(x: torch.Tensor, m: int) -> torch.Tensor:
    """(M * b, C, ...) -> (b, M * C, ...): sub-batch k becomes channel group k, in x's memory format.

    A channels_last ``x`` gives a channels_last result in one copy; as a contiguous result cuDNN
    would convert it to channels_last and back around every grouped convolution.
    """
    mb, c, *spatial = x.shape
    if x.dim() == 4 and is_channels_last(x):  # memory (M, b, H, W, C) -> (b, H, W, M, C)
        rows = x.permute(0, 2, 3, 1).reshape(m, mb // m, *spatial, c).permute(1, 2, 3, 0, 4)
        stacked = rows.reshape(mb // m, *spatial, m * c).permute(0, 3, 1, 2)
        return stacked.contiguous(memory_format=torch.channels_last)  # a no-op unless b = 1 kept a view
    return x.reshape(m, mb // m, c, *spatial).transpose(0, 1).reshape(mb // m, m * c, *spatial)


def _unstack_subbatches(x: torch.Tensor, m: int) -> torch.Tensor:
    """(b, M * C, ...) -> (M * b, C, ...), the inverse of :func:`_stack_subbatches`, in x's memory format."""
    b, mc, *spatial = x.shape
    if x.dim() == 4 and is_channels_last(x):  # memory (b, H, W, M, C) -> (M, b, H, W, C)
        rows = x.permute(0, 2, 3, 1).reshape(b, *spatial, m, mc // m).permute(3, 0, 1, 2, 4)
        unstacked = rows.reshape(m * b, *spatial, mc // m).permute(0, 3, 1, 2)
        return unstacked.contiguous(memory_format=torch.channels_last)  # as in _stack_subbatches
    return x.reshape(b, m, mc // m, *spatial).transpose(0, 1).reshape(m * b, mc // m, *spatial)


class FusedConv(torch.autograd.Function):
    """All M sub-batch convolutions as one grouped convolution (M groups per group of the layer).

    Gradients as :class:`SplitConv`; the sum into ``w_base`` is one whole-batch weight gradient,
    cheaper than the grouped convolution's M per-group ones.
    """

    @staticmethod
    def forward(ctx, x, w_values, w_base, module):
        m, dtype, c = w_values.shape[0], compute_dtype(x), module
        xc, wc = x.to(dtype), w_values.to(dtype)
        stacked = _stack_subbatches(xc, m)
        with torch.autocast(x.device.type, enabled=False):
            out = _CONV_FN[x.dim() - 2](stacked, wc.reshape(-1, *wc.shape[2:]), None, c.stride, c.padding,
                                        c.dilation, c.groups * m)
        ctx.save_for_backward(xc, stacked, wc)
        ctx.module, ctx.m, ctx.x_dtype, ctx.param_dtype = module, m, x.dtype, w_values.dtype
        ctx.base_dtype = None if w_base is None else w_base.dtype
        return _unstack_subbatches(out, m)

    @staticmethod
    def backward(ctx, grad):
        x, stacked, w = ctx.saved_tensors
        c, m = ctx.module, w.shape[0]
        grad = grad.to(x.dtype)
        weights = WeightGrads(ctx, w.shape[1:], w.device)
        conv = (c.stride, c.padding, c.dilation, False, [0] * len(c.stride))
        grad_x = None
        if ctx.needs_input_grad[0] or weights.need_values:
            gi, gw, _ = torch.ops.aten.convolution_backward(
                _stack_subbatches(grad, m).contiguous(memory_format=layout(stacked)), stacked,
                w.reshape(-1, *w.shape[2:]), None, *conv, c.groups * m,
                [ctx.needs_input_grad[0], weights.need_values, False])
            grad_x = _unstack_subbatches(gi, m).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
            if weights.need_values:
                weights.per_copy.copy_(gw.view(w.shape))
                if weights.need_base:
                    weights.set_total(gw.view(w.shape).sum(0))
        if weights.whole_batch:
            weights.set_total(torch.ops.aten.convolution_backward(
                grad.contiguous(memory_format=layout(x)), x, w[0], None, *conv, c.groups, [False, True, False])[1])
        return grad_x, weights.per_copy, weights.total, None


def fused_conv(module, copies, m, group, x):
    weight = copies_of(module, copies, "weight", m)  # (M, O, C/g, *k)
    if layer_same_for_all(weight, copies):
        return split_conv(module, copies, m, group, x)  # one whole-batch convolution
    out = FusedConv.apply(x, weight.values, weight.base, module)
    bias = copies_of(module, copies, "bias", m)
    return out if bias is None else _add_subbatch_bias(out, materialize(bias), m)


def _add_subbatch_bias(out: torch.Tensor, bias: torch.Tensor, m: int) -> torch.Tensor:
    """out (M * b, O, ...) + bias[k] (bias: (M, O)) on sub-batch k."""
    grouped = out.reshape(m, -1, *out.shape[1:])
    return (grouped + bias.view(m, 1, -1, *[1] * (out.dim() - 2)).to(out.dtype)).reshape(out.shape)


def fused_linear(module, copies, m, group, x):
    weight = copies_of(module, copies, "weight", m)
    if layer_same_for_all(weight, copies):
        return split_linear(module, copies, m, group, x)  # one whole-batch matmul
    weight = materialize(weight)  # (M, out, in)
    grouped = x.reshape(m, -1, x.shape[-1])  # (M, b * ..., in): sub-batches are contiguous
    out = torch.bmm(grouped, weight.transpose(1, 2).to(grouped.dtype))
    bias = copies_of(module, copies, "bias", m)
    if bias is not None:
        out = out + materialize(bias)[:, None].to(out.dtype)
    return out.reshape(*x.shape[:-1], weight.shape[1])
