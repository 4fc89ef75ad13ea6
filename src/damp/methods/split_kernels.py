"""The "split" layer kernels: M ordinary convolutions / matmuls, one per sub-batch slice of the input.

The weight copies are used as they are in both passes (no ``w + delta`` rebuilt), and when only the
clean weights need a gradient the backward computes one whole-batch weight gradient instead of M
(:class:`WeightGrads`). Copies that are one tensor expanded run as one whole-batch layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from damp.methods.copies import Copies, compute_dtype, copies_of, same_for_all


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether (B, C, H, W) or (B, C, D, H, W) ``x`` is channels-last by PyTorch's own stride rule, and dense.

    The rule is the one ``F.conv2d`` follows to pick its output layout, so every method runs the layout
    SGD runs. It settles ambiguous strides as PyTorch does: a one-channel batch cropped from NHWC storage
    (strides (HW, 1, W, 1), as the resident loader gives Fashion-MNIST) is channels-last, and SGD's
    convolutions run it so (about 1.5 x faster on a 2-core CPU, docs/performance.md).
    """
    memory_format = _CHANNELS_LAST.get(x.dim())
    return (memory_format is not None and _channels_last_strides(x.shape, x.stride())
            and x.is_contiguous(memory_format=memory_format))


def _channels_last_strides(sizes: torch.Size, strides: tuple[int, ...]) -> bool:
    """c10's is_channels_last_strides_2d/3d: strides that do not decrease in the order C, W, H, (D,) N,
    with the ambiguities of size-1 dimensions settled as c10 settles them (an N111 batch is contiguous)."""
    if strides[1] == 0:
        return False
    low = 0
    for d in (1, *range(len(sizes) - 1, 1, -1), 0):
        if sizes[d] == 0 or strides[d] < low or (d == 0 and low == strides[1]):
            return False
        low = strides[d] * sizes[d]
    return True


def layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format a kernel's gradients are made contiguous in: x's, so cuDNN never converts."""
    return _CHANNELS_LAST[x.dim()] if is_channels_last(x) else torch.contiguous_format


class WeightGrads:
    """Collects the weight gradients of a split kernel: one per copy, their sum into the base, or both.

    When only the base needs a gradient (DAMP, DAAP, SAM's descent), the sum over k of the
    gradients at ``w[k]`` is one whole-batch weight gradient (it does not depend on the weight), so
    ``whole_batch`` computes it once instead of M per-copy gradients and their sum.
    """

    def __init__(self, ctx, shape: torch.Size, device: torch.device) -> None:
        self.need_values, self.need_base = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        into = getattr(ctx, "grad_buffer", None)  # Copies.grad_buffer: written into, not allocated
        fits = into is not None and into.shape == (ctx.m, *shape) and into.dtype == ctx.param_dtype \
            and into.device == device and into.is_contiguous()
        self.per_copy = (into if fits else torch.empty(ctx.m, *shape, dtype=ctx.param_dtype, device=device)) \
            if self.need_values else None
        self.total, self.base_dtype = None, ctx.base_dtype

    @property
    def whole_batch(self) -> bool:
        return self.need_base and not self.need_values

    def add(self, k: int, grad: torch.Tensor) -> None:
        self.per_copy[k] = grad
        if self.need_base:
            self.total = grad.to(self.base_dtype, copy=True) if self.total is None else self.total.add_(grad)

    def set_total(self, grad: torch.Tensor) -> None:
        self.total = grad.to(self.base_dtype)


def bias_grads(ctx, grad: torch.Tensor, m: int, channel_dim: int) -> tuple:
    """Gradients of the shared bias, the bias copies and their base, from the output gradient."""
    need_shared, need_values, need_base = ctx.needs_input_grad[4:7]  # bias, b_values, b_base
    if not (need_shared or need_values or need_base):
        return None, None, None
    moved = grad.movedim(channel_dim, -1)
    per_copy = moved.reshape(m, -1, moved.shape[-1]).sum(1).to(ctx.param_dtype)  # (M, out)
    total = per_copy.sum(0)
    return total if need_shared else None, per_copy if need_values else None, total if need_base else None


def _split_forward(ctx, layer: Callable, x: torch.Tensor, w_values: torch.Tensor, w_base: torch.Tensor | None,
                   w_grad_buffer: torch.Tensor | None, bias: torch.Tensor | None, b_values: torch.Tensor | None
                   ) -> torch.Tensor:
    """``layer(x_k, w_values[k], bias_k)`` for every sub-batch k, concatenated; saves what the backward needs.

    Copies that are one tensor expanded run as one whole-batch layer (``ctx.same``). Autocast is
    applied by hand (inputs cast once, kernels run with autocast off), so the backward runs in the
    same dtype as the forward.
    """
    m, dtype = w_values.shape[0], compute_dtype(x)
    ctx.same = same_for_all(w_values) and same_for_all(b_values)
    if ctx.same:
        w_values, b_values = w_values[:1], None if b_values is None else b_values[:1]
    xc, wc = x.to(dtype), w_values.to(dtype)
    biases = b_values.to(dtype) if b_values is not None else [None if bias is None else bias.to(dtype)] * m
    with torch.autocast(x.device.type, enabled=False):
        out = layer(xc, wc[0], biases[0]) if ctx.same else \
            torch.cat([layer(xk, wc[k], biases[k]) for k, xk in enumerate(xc.chunk(m))])
    ctx.save_for_backward(xc, wc)
    ctx.m, ctx.x_dtype, ctx.param_dtype = m, x.dtype, w_values.dtype
    ctx.base_dtype = None if w_base is None else w_base.dtype
    ctx.grad_buffer = w_grad_buffer
    return out


class SplitConv(torch.autograd.Function):
    """Convolution of sub-batch k at weight ``w_values[k]`` (bias shared or ``b_values[k]``).

    Gradients: to ``w_base`` the sum over k, to ``w_values`` one per k (whichever requires it).
    """

    @staticmethod
    def forward(ctx, x, w_values, w_base, w_grad_buffer, bias, b_values, b_base, module):
        ctx.module = module
        return _split_forward(ctx, module._conv_forward, x, w_values, w_base, w_grad_buffer, bias, b_values)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        c, m, same = ctx.module, ctx.m, ctx.same
        grad = grad.to(x.dtype)
        weights = WeightGrads(ctx, w.shape[1:], w.device)

        def conv_backward(g, xk, wk, input_grad, weight_grad):
            return torch.ops.aten.convolution_backward(g.contiguous(memory_format=layout(xk)), xk, wk, None,
                                                       c.stride, c.padding, c.dilation, False, [0] * len(c.stride),
                                                       c.groups, [input_grad, weight_grad, False])[:2]

        need_x = ctx.needs_input_grad[0]
        grad_x = conv_backward(grad, x, w[0], True, False)[0] if need_x and same else None
        if weights.need_values or (need_x and not same):
            parts = []
            for k, (xk, gk) in enumerate(zip(x.chunk(m), grad.chunk(m))):
                gi, gw = conv_backward(gk, xk, w[0 if same else k], need_x and not same, weights.need_values)
                parts.append(gi)
                if weights.need_values:
                    weights.add(k, gw)
            grad_x = torch.cat(parts) if need_x and not same else grad_x
        if weights.whole_batch:
            weights.set_total(conv_backward(grad, x, w[0], False, True)[1])
        shared, b_values_grad, b_base_grad = bias_grads(ctx, grad, m, 1)
        grad_x = grad_x.to(ctx.x_dtype) if need_x else None
        return grad_x, weights.per_copy, weights.total, None, shared, b_values_grad, b_base_grad, None


class SplitLinear(torch.autograd.Function):
    """Linear map of sub-batch k at weight ``w_values[k]`` (bias shared or ``b_values[k]``); see SplitConv."""

    @staticmethod
    def forward(ctx, x, w_values, w_base, w_grad_buffer, bias, b_values, b_base):
        return _split_forward(ctx, F.linear, x, w_values, w_base, w_grad_buffer, bias, b_values)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        m = ctx.m
        grad = grad.to(x.dtype)
        pairs = list(zip(x.chunk(m), grad.chunk(m)))
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ w[0] if ctx.same else torch.cat([gk @ w[k] for k, (_, gk) in enumerate(pairs)]))
            grad_x = grad_x.to(ctx.x_dtype)
        weights = WeightGrads(ctx, w.shape[1:], w.device)
        if weights.whole_batch:
            weights.set_total(grad.reshape(-1, grad.shape[-1]).T @ x.reshape(-1, x.shape[-1]))
        elif weights.need_values:
            for k, (xk, gk) in enumerate(pairs):
                weights.add(k, gk.reshape(-1, gk.shape[-1]).T @ xk.reshape(-1, xk.shape[-1]))
        shared, b_values_grad, b_base_grad = bias_grads(ctx, grad, m, grad.dim() - 1)
        return grad_x, weights.per_copy, weights.total, None, shared, b_values_grad, b_base_grad


def _split_args(module: nn.Module, copies: dict[str, Copies], m: int) -> tuple:
    weight = copies_of(module, copies, "weight", m)
    bias = copies.get("bias")
    return (weight.values, weight.base, weight.grad_buffer, None if bias is not None else module.bias,
            None if bias is None else bias.values, None if bias is None else bias.base)


def split_conv(module, copies, m, group, x):
    return SplitConv.apply(x, *_split_args(module, copies, m), module)


def split_linear(module, copies, m, group, x):
    return SplitLinear.apply(x, *_split_args(module, copies, m))
