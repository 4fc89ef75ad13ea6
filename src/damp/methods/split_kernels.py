"""The split executor's convolution and linear kernels: sub-batch k at ``weight + delta[k]``.

Autograd over M materialised weight copies would keep M copies and M weight gradients alive (8x
the weights for M = 8) and allocate and zero-fill them every step; these functions rebuild copy k
in the backward and accumulate a single weight gradient, which is all DAMP, DAAP and SAM's descent
pass need (the gradient with respect to w of sum_k L_k(w + delta_k), delta without gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

def _autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a kernel on ``x`` computes in: the autocast dtype when autocast is on, else x's."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


class SplitConv(torch.autograd.Function):
    """Conv of sub-batch k at ``weight + delta_w[k]`` (bias likewise), one summed weight gradient.

    Autocast is applied by hand (inputs cast once, kernels run with autocast off), so the backward
    runs in the same dtype as the forward.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, delta_w, delta_b, module):
        m, dtype = delta_w.shape[0], _autocast_dtype(x)
        ctx.module, ctx.m, ctx.x_dtype, ctx.has_bias = module, m, x.dtype, bias is not None
        xc = x.to(dtype)
        ctx.save_for_backward(xc, weight, delta_w)
        with torch.autocast(x.device.type, enabled=False):
            outs = [module._conv_forward(xk, (weight + delta_w[k]).to(dtype),
                                         None if bias is None else (bias + (0 if delta_b is None else delta_b[k])
                                                                    ).to(dtype))
                    for k, xk in enumerate(xc.chunk(m))]
        return torch.cat(outs)

    @staticmethod
    def backward(ctx, grad):
        x, weight, delta_w = ctx.saved_tensors
        c = ctx.module
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False]
        grad_x, grad_w = [], torch.zeros_like(weight) if mask[1] else None
        for k, (xk, gk) in enumerate(zip(x.chunk(ctx.m), grad.to(x.dtype).chunk(ctx.m))):
            gi, gw, _ = torch.ops.aten.convolution_backward(
                gk.contiguous(), xk, (weight + delta_w[k]).to(x.dtype), None, c.stride, c.padding, c.dilation,
                False, [0] * len(c.stride), c.groups, mask)
            grad_x.append(gi)
            if grad_w is not None:
                grad_w.add_(gw.to(weight.dtype))
        grad_b = grad.sum([0, *range(2, grad.dim())]).to(weight.dtype) \
            if ctx.has_bias and ctx.needs_input_grad[2] else None
        return torch.cat(grad_x).to(ctx.x_dtype) if mask[0] else None, grad_w, grad_b, None, None, None


class SplitLinear(torch.autograd.Function):
    """Linear map of sub-batch k at ``weight + delta_w[k]`` (bias likewise), one summed weight gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, delta_w, delta_b):
        m, dtype = delta_w.shape[0], _autocast_dtype(x)
        ctx.m, ctx.x_dtype, ctx.has_bias = m, x.dtype, bias is not None
        xc = x.to(dtype)
        ctx.save_for_backward(xc, weight, delta_w)
        with torch.autocast(x.device.type, enabled=False):
            return torch.cat([F.linear(xk, (weight + delta_w[k]).to(dtype),
                                       None if bias is None else (bias + (0 if delta_b is None else delta_b[k])
                                                                  ).to(dtype))
                              for k, xk in enumerate(xc.chunk(m))])

    @staticmethod
    def backward(ctx, grad):
        x, weight, delta_w = ctx.saved_tensors
        grad = grad.to(x.dtype)
        grad_x, grad_w = [], torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for k, (xk, gk) in enumerate(zip(x.chunk(ctx.m), grad.chunk(ctx.m))):
            if ctx.needs_input_grad[0]:
                grad_x.append(gk @ (weight + delta_w[k]).to(x.dtype))
            if grad_w is not None:
                grad_w.add_((gk.reshape(-1, gk.shape[-1]).T @ xk.reshape(-1, xk.shape[-1])).to(weight.dtype))
        grad_b = grad.reshape(-1, grad.shape[-1]).sum(0).to(weight.dtype) \
            if ctx.has_bias and ctx.needs_input_grad[2] else None
        return torch.cat(grad_x).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None, grad_w, grad_b, None, None
