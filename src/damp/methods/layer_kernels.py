"""Layer kernels of the per-layer executor: sub-batch k of a layer's input at copy k of its parameters.

Every kernel has the signature ``kernel(module, copies, m, group, *args, **kwargs)``, where ``copies``
maps a local parameter name to its :class:`~damp.methods.copies.Copies` and ``m`` is the number of
sub-batches of the input. :data:`LAYER_KERNELS` is the one table from layer type to its fused,
split and few-channel CPU kernels; every other leaf module runs :func:`generic`
(``torch.func.functional_call`` once per sub-batch). This module holds the table, the normalisation
kernels and the fallback:

- "split" (CPU; methods/split_kernels.py): M ordinary convolutions / matmuls on the M slices of
  the input, the weight copies used as they are in both passes.
- "fused" (CUDA; methods/fused_kernels.py): one grouped convolution or one batched matmul per layer.
- "cpu" (the CPU default): fused for layers with few input channels (a convolution only on NCHW input),
  split for the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from damp.methods.copies import Copies, copies_of, materialize
from damp.methods.fused_kernels import fused_conv, fused_linear
from damp.methods.split_kernels import is_channels_last, split_conv, split_linear
from damp.methods.sync_batchnorm import subbatch_batch_norm



def batch_norm(module, copies, m, group, x):
    scale, shift = (copies_of(module, copies, name, m) for name in ("weight", "bias"))
    return subbatch_batch_norm(module, x, None if scale is None else materialize(scale),
                               None if shift is None else materialize(shift), group)


def _affine(normalized: torch.Tensor, module: nn.Module, copies: dict[str, Copies], m: int,
            channel_dims: list[int]) -> torch.Tensor:
    """normalized * scale_k + shift_k for sub-batch k, with the module's own values where not copied."""
    grouped = normalized.reshape(m, normalized.shape[0] // m, *normalized.shape[1:])  # (M, b, ...)

    def broadcastable(name: str) -> torch.Tensor | None:
        value = copies_of(module, copies, name, m)
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


# On CPU, oneDNN runs a grouped convolution with few channels per group faster than M separate
# ones on NCHW batches, and M separate ones faster above (measured when it was set, on NCHW batches).
CPU_FUSED_BELOW_CHANNELS = 64


def cpu_kernels(module: nn.Module) -> str:
    """ "fused" for a layer with fewer than 64 input channels per group, else "split"."""
    if isinstance(module, nn.modules.conv._ConvNd):
        channels = module.in_channels // module.groups
    else:
        channels = getattr(module, "in_features", CPU_FUSED_BELOW_CHANNELS)
    return "fused" if channels < CPU_FUSED_BELOW_CHANNELS else "split"


def cpu_conv(module, copies, m, group, x):
    """A convolution with few input channels under the "cpu" kernels: fused on an NCHW input, split on a
    channels-last one. Channels-last, the grouped convolution's stacking copies (the whole input and
    output permuted, in both passes) cost more than M convolutions on contiguous slices: ResNet-8's
    DAMP step 1.30 against 1.46 × SGD (docs/performance.md, "Few-channel convolutions on channels-last
    input")."""
    return (split_conv if is_channels_last(x) else fused_conv)(module, copies, m, group, x)


class LayerKernels(NamedTuple):
    """One layer type's kernels: ``fused`` and ``split``, and ``few_channels``, the one the "cpu" kernels
    run for a layer with fewer than 64 input channels per group (:func:`cpu_kernels`)."""

    matches: Callable[[nn.Module], bool]
    fused: Kernel
    split: Kernel
    few_channels: Kernel


# Layer type -> its kernels. Matched in order; anything else runs `generic`.
LAYER_KERNELS: list[LayerKernels] = [
    LayerKernels(_zero_padded_conv, fused_conv, split_conv, cpu_conv),
    LayerKernels(_plain_forward(nn.Linear), fused_linear, split_linear, fused_linear),
    LayerKernels(lambda module: isinstance(module, nn.modules.batchnorm._BatchNorm), batch_norm, batch_norm,
                 batch_norm),
    LayerKernels(_plain_forward(nn.LayerNorm), layer_norm, layer_norm, layer_norm),
    LayerKernels(_plain_forward(nn.GroupNorm), group_norm, group_norm, group_norm),
]


def kernel_for(module: nn.Module, kernels: str) -> Kernel:
    """``module``'s kernel for ``kernels`` ("fused", "split", or "cpu": per layer by :func:`cpu_kernels`,
    its ``few_channels`` kernel or its split one).

    Layer types outside :data:`LAYER_KERNELS` run :func:`generic`.
    """
    for row in LAYER_KERNELS:
        if row.matches(module):
            if kernels == "cpu":
                return row.few_channels if cpu_kernels(module) == "fused" else row.split
            return row.fused if kernels == "fused" else row.split
    return generic


__all__ = ["Copies", "LAYER_KERNELS", "LayerKernels", "generic", "kernel_for", "materialize"]
