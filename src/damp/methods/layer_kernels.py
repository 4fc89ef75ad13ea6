"""Layer kernels of the per-layer executor: sub-batch k of a layer's input at copy k of its parameters.

Every kernel has the signature ``kernel(module, copies, m, group, *args, **kwargs)``, where ``copies``
maps a local parameter name to its :class:`Copies` and ``m`` is the number of sub-batches of the
input. :data:`LAYER_KERNELS` is the one table from layer type to its fused and split kernel; every
other leaf module runs :func:`generic` (``torch.func.functional_call`` once per sub-batch).

- "split" (CPU): M ordinary convolutions / matmuls on the M slices of the input. The weight copies
  are used as they are in both passes (no ``w + delta`` rebuilt), and the backward accumulates one
  weight gradient instead of M (:class:`SplitConv`, :class:`SplitLinear`).
- "fused" (CUDA): one grouped convolution or one batched matmul per layer.
- "cpu" (the CPU default): fused for layers with few input channels, split for the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from damp.methods.sync_batchnorm import subbatch_batch_norm

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class Copies(NamedTuple):
    """The M sub-batch values of one parameter: sub-batch k runs at ``values[k]`` ((M, *shape)).

    With ``base`` (the parameter), ``values`` carry no gradient and ``base.grad`` receives the sum
    over k of the gradients *at* ``values[k]``: the Jacobian of a copy with respect to ``base`` is
    the identity, so there is no chain-rule xi factor (paper Algorithm 1, line 9). Without ``base``
    the gradient goes to ``values`` itself, one per sub-batch (SAM's ascent pass).
    """

    values: torch.Tensor
    base: torch.Tensor | None = None


def materialize(copies: Copies) -> torch.Tensor:
    """(M, *shape) copies that autograd differentiates as :class:`Copies` declares."""
    if copies.base is None:
        return copies.values
    return copies.values + (copies.base - copies.base.detach())  # + 0, with the identity Jacobian to base


def _copies_of(module: nn.Module, copies: dict[str, Copies], name: str, m: int) -> Copies | None:
    """The copies of parameter ``name``, or the shared parameter as M views of it (None if unset)."""
    if name in copies:
        return copies[name]
    shared = getattr(module, name, None)
    return None if shared is None else Copies(shared.detach().expand(m, *shared.shape), shared)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a kernel on ``x`` computes in: the autocast dtype when autocast is on, else x's."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


class _WeightGrads:
    """Collects the weight gradients of a split kernel: one per copy, their sum into the base, or both.

    When only the base needs a gradient (DAMP, DAAP, SAM's descent), the sum over k of the
    gradients at ``w[k]`` is one whole-batch weight gradient (it does not depend on the weight), so
    ``whole_batch`` computes it once instead of M per-copy gradients and their sum.
    """

    def __init__(self, ctx, shape: torch.Size, device: torch.device) -> None:
        self.need_values, self.need_base = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        self.per_copy = torch.empty(ctx.m, *shape, dtype=ctx.param_dtype, device=device) \
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


def _bias_grads(ctx, grad: torch.Tensor, m: int, channel_dim: int) -> tuple:
    """Gradients of the shared bias, the bias copies and their base, from the output gradient."""
    need_shared, need_values, need_base = ctx.needs_input_grad[3:6]
    if not (need_shared or need_values or need_base):
        return None, None, None
    moved = grad.movedim(channel_dim, -1)
    per_copy = moved.reshape(m, -1, moved.shape[-1]).sum(1).to(ctx.param_dtype)  # (M, out)
    total = per_copy.sum(0)
    return total if need_shared else None, per_copy if need_values else None, total if need_base else None


def _same_for_all(values: torch.Tensor | None) -> bool:
    """Whether the M copies are one tensor expanded (SAM's ascent: every sub-batch at the clean weights)."""
    return values is None or values.shape[0] == 1 or values.stride(0) == 0


def _layer_same_for_all(weight: Copies, copies: dict[str, Copies]) -> bool:
    """Whether a layer's weight and bias copies are all one tensor expanded (run it as one whole-batch layer)."""
    return _same_for_all(weight.values) and _same_for_all(copies["bias"].values if "bias" in copies else None)


def _split_forward(ctx, layer: Callable, x: torch.Tensor, w_values: torch.Tensor, w_base: torch.Tensor | None,
                   bias: torch.Tensor | None, b_values: torch.Tensor | None) -> torch.Tensor:
    """``layer(x_k, w_values[k], bias_k)`` for every sub-batch k, concatenated; saves what the backward needs.

    Copies that are one tensor expanded run as one whole-batch layer (``ctx.same``). Autocast is
    applied by hand (inputs cast once, kernels run with autocast off), so the backward runs in the
    same dtype as the forward.
    """
    m, dtype = w_values.shape[0], _compute_dtype(x)
    ctx.same = _same_for_all(w_values) and _same_for_all(b_values)
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
    return out


class SplitConv(torch.autograd.Function):
    """Convolution of sub-batch k at weight ``w_values[k]`` (bias shared or ``b_values[k]``).

    Gradients: to ``w_base`` the sum over k, to ``w_values`` one per k (whichever requires it).
    """

    @staticmethod
    def forward(ctx, x, w_values, w_base, bias, b_values, b_base, module):
        ctx.module = module
        return _split_forward(ctx, module._conv_forward, x, w_values, w_base, bias, b_values)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        c, m, same = ctx.module, ctx.m, ctx.same
        grad = grad.to(x.dtype)
        weights = _WeightGrads(ctx, w.shape[1:], w.device)

        def conv_backward(g, xk, wk, input_grad, weight_grad):
            return torch.ops.aten.convolution_backward(g.contiguous(), xk, wk, None, c.stride, c.padding, c.dilation,
                                                       False, [0] * len(c.stride), c.groups,
                                                       [input_grad, weight_grad, False])[:2]

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
        shared, b_values_grad, b_base_grad = _bias_grads(ctx, grad, m, 1)
        grad_x = grad_x.to(ctx.x_dtype) if need_x else None
        return grad_x, weights.per_copy, weights.total, shared, b_values_grad, b_base_grad, None


class SplitLinear(torch.autograd.Function):
    """Linear map of sub-batch k at weight ``w_values[k]`` (bias shared or ``b_values[k]``); see SplitConv."""

    @staticmethod
    def forward(ctx, x, w_values, w_base, bias, b_values, b_base):
        return _split_forward(ctx, F.linear, x, w_values, w_base, bias, b_values)

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
        weights = _WeightGrads(ctx, w.shape[1:], w.device)
        if weights.whole_batch:
            weights.set_total(grad.reshape(-1, grad.shape[-1]).T @ x.reshape(-1, x.shape[-1]))
        elif weights.need_values:
            for k, (xk, gk) in enumerate(pairs):
                weights.add(k, gk.reshape(-1, gk.shape[-1]).T @ xk.reshape(-1, xk.shape[-1]))
        shared, b_values_grad, b_base_grad = _bias_grads(ctx, grad, m, grad.dim() - 1)
        return grad_x, weights.per_copy, weights.total, shared, b_values_grad, b_base_grad


def _split_args(module: nn.Module, copies: dict[str, Copies], m: int) -> tuple:
    weight = _copies_of(module, copies, "weight", m)
    bias = copies.get("bias")
    return (weight.values, weight.base, None if bias is not None else module.bias,
            None if bias is None else bias.values, None if bias is None else bias.base)


def split_conv(module, copies, m, group, x):
    return SplitConv.apply(x, *_split_args(module, copies, m), module)


def split_linear(module, copies, m, group, x):
    return SplitLinear.apply(x, *_split_args(module, copies, m))


def _stack_subbatches(x: torch.Tensor, m: int) -> torch.Tensor:
    """(M * b, C, ...) -> (b, M * C, ...): sub-batch k becomes channel group k."""
    mb, c, *spatial = x.shape
    return x.reshape(m, mb // m, c, *spatial).transpose(0, 1).reshape(mb // m, m * c, *spatial)


def _unstack_subbatches(x: torch.Tensor, m: int) -> torch.Tensor:
    """(b, M * C, ...) -> (M * b, C, ...), the inverse of :func:`_stack_subbatches`."""
    b, mc, *spatial = x.shape
    return x.reshape(b, m, mc // m, *spatial).transpose(0, 1).reshape(m * b, mc // m, *spatial)


class FusedConv(torch.autograd.Function):
    """All M sub-batch convolutions as one grouped convolution (M groups per group of the layer).

    Gradients as :class:`SplitConv`; the sum into ``w_base`` is one whole-batch weight gradient,
    cheaper than the grouped convolution's M per-group ones.
    """

    @staticmethod
    def forward(ctx, x, w_values, w_base, module):
        m, dtype, c = w_values.shape[0], _compute_dtype(x), module
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
        weights = _WeightGrads(ctx, w.shape[1:], w.device)
        conv = (c.stride, c.padding, c.dilation, False, [0] * len(c.stride))
        grad_x = None
        if ctx.needs_input_grad[0] or weights.need_values:
            gi, gw, _ = torch.ops.aten.convolution_backward(
                _stack_subbatches(grad, m).contiguous(), stacked,
                w.reshape(-1, *w.shape[2:]), None, *conv, c.groups * m,
                [ctx.needs_input_grad[0], weights.need_values, False])
            grad_x = _unstack_subbatches(gi, m).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
            if weights.need_values:
                weights.per_copy.copy_(gw.view(w.shape))
                if weights.need_base:
                    weights.set_total(gw.view(w.shape).sum(0))
        if weights.whole_batch:
            weights.set_total(torch.ops.aten.convolution_backward(
                grad.contiguous(), x, w[0], None, *conv, c.groups, [False, True, False])[1])
        return grad_x, weights.per_copy, weights.total, None


def fused_conv(module, copies, m, group, x):
    weight = _copies_of(module, copies, "weight", m)  # (M, O, C/g, *k)
    if _layer_same_for_all(weight, copies):
        return split_conv(module, copies, m, group, x)  # one whole-batch convolution
    out = FusedConv.apply(x, weight.values, weight.base, module)
    bias = _copies_of(module, copies, "bias", m)
    return out if bias is None else _add_subbatch_bias(out, materialize(bias), m)


def _add_subbatch_bias(out: torch.Tensor, bias: torch.Tensor, m: int) -> torch.Tensor:
    """out (M * b, O, ...) + bias[k] (bias: (M, O)) on sub-batch k."""
    grouped = out.reshape(m, -1, *out.shape[1:])
    return (grouped + bias.view(m, 1, -1, *[1] * (out.dim() - 2)).to(out.dtype)).reshape(out.shape)


def fused_linear(module, copies, m, group, x):
    weight = _copies_of(module, copies, "weight", m)
    if _layer_same_for_all(weight, copies):
        return split_linear(module, copies, m, group, x)  # one whole-batch matmul
    weight = materialize(weight)  # (M, out, in)
    grouped = x.reshape(m, -1, x.shape[-1])  # (M, b * ..., in): sub-batches are contiguous
    out = torch.bmm(grouped, weight.transpose(1, 2).to(grouped.dtype))
    bias = _copies_of(module, copies, "bias", m)
    if bias is not None:
        out = out + materialize(bias)[:, None].to(out.dtype)
    return out.reshape(*x.shape[:-1], weight.shape[1])


def batch_norm(module, copies, m, group, x):
    scale, shift = (_copies_of(module, copies, name, m) for name in ("weight", "bias"))
    return subbatch_batch_norm(module, x, None if scale is None else materialize(scale),
                               None if shift is None else materialize(shift), group)


def _affine(normalized: torch.Tensor, module: nn.Module, copies: dict[str, Copies], m: int,
            channel_dims: list[int]) -> torch.Tensor:
    """normalized * scale_k + shift_k for sub-batch k, with the module's own values where not copied."""
    grouped = normalized.reshape(m, normalized.shape[0] // m, *normalized.shape[1:])  # (M, b, ...)

    def broadcastable(name: str) -> torch.Tensor | None:
        value = _copies_of(module, copies, name, m)
        if value is None:
            return None
        value = materialize(value)
        shape = [m] + [1] * normalized.dim()
        for d, size in zip(channel_dims, value.shape[1:]):
            shape[d + 1] = size
        return value.reshape(shape).to(grouped.dtype)

    scale, shift = broadcastable("weight"), broadcastable("bias")
    if scale is not None and shift is not None:
        out = torch.addcmul(shift, grouped, scale)  # one pass instead of a multiply and an add
    else:
        out = grouped * scale if scale is not None else grouped + shift if shift is not None else grouped
    return out.reshape(normalized.shape)


def layer_norm(module, copies, m, group, x):
    shape = module.normalized_shape
    dims = list(range(x.dim() - len(shape), x.dim()))
    return _affine(F.layer_norm(x, shape, None, None, module.eps), module, copies, m, dims)


def group_norm(module, copies, m, group, x):
    return _affine(F.group_norm(x, module.num_groups, None, None, module.eps), module, copies, m, [1])


@contextlib.contextmanager
def _class_forward(module: nn.Module) -> Iterator[None]:
    """Let ``module(...)`` run its class's forward inside the block (the executor patches the instance's)."""
    patched = vars(module).pop("forward", None)
    try:
        yield
    finally:
        if patched is not None:
            module.forward = patched


def generic(module, copies, m, group, *args, **kwargs):
    """Any other leaf module (nn.MultiheadAttention, user layers): its own forward once per sub-batch.

    The inputs are split along the batch dimension (dim 1 for a sequence-first MultiheadAttention);
    the module must treat samples independently, as every layer but BatchNorm does.
    """
    dim = 1 if isinstance(module, nn.MultiheadAttention) and not module.batch_first else 0
    batch = args[0].shape[dim]
    values = {name: materialize(c).unbind(0) for name, c in copies.items()}  # unbind once, not M indexings

    def part(value, k, d=dim):
        if isinstance(value, torch.Tensor) and value.dim() > d and value.shape[d] == batch:
            return value.chunk(m, d)[k]
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch:  # e.g. key_padding_mask
            return value.chunk(m, 0)[k]
        return value

    outputs = []
    with _class_forward(module):
        for k in range(m):
            outputs.append(torch.func.functional_call(
                module, {name: v[k] for name, v in values.items()}, tuple(part(a, k) for a in args),
                {key: part(v, k) for key, v in kwargs.items()}, strict=False))
    if isinstance(outputs[0], torch.Tensor):
        return torch.cat(outputs, dim)
    return type(outputs[0])(None if parts[0] is None else torch.cat(parts, dim if i == 0 else 0)
                            for i, parts in enumerate(zip(*outputs)))


Kernel = Callable[..., torch.Tensor]


def _plain_forward(cls: type[nn.Module]) -> Callable[[nn.Module], bool]:
    """Whether a module is a ``cls`` that keeps ``cls``'s forward (a subclass overriding it runs generic)."""
    return lambda module: isinstance(module, cls) and type(module).forward is cls.forward


_CONV_FORWARDS = (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward)


def _zero_padded_conv(module: nn.Module) -> bool:
    """A torch convolution with zero padding given as numbers (other paddings run generic)."""
    return (type(module).forward in _CONV_FORWARDS and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))


# Layer type -> (fused kernel, split kernel). Matched in order; anything else runs `generic`.
LAYER_KERNELS: list[tuple[Callable[[nn.Module], bool], Kernel, Kernel]] = [
    (_zero_padded_conv, fused_conv, split_conv),
    (_plain_forward(nn.Linear), fused_linear, split_linear),
    (lambda module: isinstance(module, nn.modules.batchnorm._BatchNorm), batch_norm, batch_norm),
    (_plain_forward(nn.LayerNorm), layer_norm, layer_norm),
    (_plain_forward(nn.GroupNorm), group_norm, group_norm),
]


# On CPU, oneDNN runs a grouped convolution with few channels per group faster than M separate
# ones, and M separate ones faster above (measured: docs/performance.md, "Executors on CPU").
CPU_FUSED_BELOW_CHANNELS = 64


def cpu_kernels(module: nn.Module) -> str:
    """ "fused" for a layer with fewer than 64 input channels per group, else "split"."""
    if isinstance(module, nn.modules.conv._ConvNd):
        channels = module.in_channels // module.groups
    else:
        channels = getattr(module, "in_features", CPU_FUSED_BELOW_CHANNELS)
    return "fused" if channels < CPU_FUSED_BELOW_CHANNELS else "split"


def kernel_for(module: nn.Module, kernels: str) -> Kernel:
    """``module``'s kernel for ``kernels`` ("fused", "split", or "cpu": :func:`cpu_kernels` per layer).

    Layer types outside :data:`LAYER_KERNELS` run :func:`generic`.
    """
    for matches, fused, split in LAYER_KERNELS:
        if matches(module):
            choice = cpu_kernels(module) if kernels == "cpu" else kernels
            return fused if choice == "fused" else split
    return generic


__all__ = ["Copies", "LAYER_KERNELS", "SplitConv", "SplitLinear", "generic", "kernel_for", "materialize"]
