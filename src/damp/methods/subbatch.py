"""Per-sub-batch weights inside one forward pass, with BatchNorm over the whole batch.

DAMP, DAAP, SAM and ASAM evaluate sub-batch m of a batch at its own weights w_m. The official code
does this with ``vmap`` over sub-batches and a BatchNorm whose statistics are synchronised over the
whole batch of every device (the official configs' `sync_batch_norm: true`; docs/fidelity.md,
"BatchNorm and sub-batches"). Here every module that owns
a perturbed parameter runs its M weight copies on the M sub-batches of its input, and every other
layer, BatchNorm included, sees the whole batch. Two kernel strategies compute the same thing:

- ``"fused"``: one grouped convolution (groups = M x groups) or one batched matmul per layer; the
  fastest on a GPU, where one large kernel beats M small launches.
- ``"split"``: M ordinary convolutions / matmuls on the M slices of the layer's input, concatenated;
  the fastest on CPU, where oneDNN runs small batches well and grouped convolutions slowly.

Copies are ``w + delta.detach()`` (or an ``expand`` of w): their Jacobian with respect to w is the
identity, so autograd accumulates sum_m dL/dw_m, the gradient *at* the perturbed weights without a
chain-rule xi factor, as the paper's Algorithm 1 (line 9) and the official code take it.

Under torch.distributed, BatchNorm statistics are all-reduced over the process group (autograd
included; methods/sync_batchnorm.py), so N processes normalise over the global batch as one
process would. The split kernels for convolutions and linear layers are in methods/split_kernels.py.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from damp.methods.split_kernels import SplitConv, SplitLinear
from damp.methods.sync_batchnorm import whole_batch_norm

KERNELS = ("fused", "split")
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def has_train_batchnorm(model: nn.Module) -> bool:
    """Whether any BatchNorm layer of ``model`` normalises with batch statistics (train mode)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)
               for m in model.modules())


def parameter_owners(model: nn.Module, params: list[torch.Tensor]) -> dict[nn.Module, dict[str, int]] | str:
    """Map each module that will run copies to {its local parameter name: index into ``params``}.

    The owner of a parameter is the module holding it. ``nn.MultiheadAttention`` owns its
    ``out_proj`` parameters too, since it reads them directly and never calls ``out_proj``.

    Returns:
        The mapping, or a one-line reason naming a parameter no module can run per sub-batch
        (one held by a module with children, such as a ViT's position embedding).
    """
    index: dict[int, int] = {}
    for i, p in enumerate(params):
        index.setdefault(id(p), i)
    owners: dict[nn.Module, dict[str, int]] = {}
    claimed: set[int] = set()
    for module_name, module in model.named_modules():
        local = {}
        if isinstance(module, nn.MultiheadAttention):
            local = {f"out_proj.{n}": p for n, p in module.out_proj._parameters.items()}
        local.update(module._parameters)
        for name, p in local.items():
            if p is None or id(p) not in index or id(p) in claimed:
                continue
            leaf = isinstance(module, nn.MultiheadAttention) or not any(True for _ in module.children())
            if not leaf:
                return f"parameter {module_name + '.' if module_name else ''}{name} belongs to a module with children"
            owners.setdefault(module, {})[name] = index[id(p)]
            claimed.add(id(p))
    missing = len(index) - len(claimed)
    return owners if not missing else f"{missing} selected parameters belong to no module of the model"


def _get(module: nn.Module, copies: dict[str, torch.Tensor], name: str, k: int) -> torch.Tensor | None:
    """Sub-batch k's value of parameter ``name``: its copy, or the module's shared parameter.

    ``unbind`` once per layer (cached by :class:`_Copies`): indexing the (M, ...) copy M times
    would make autograd allocate and zero-fill M full-size gradients.
    """
    if name not in copies:
        return getattr(module, name)
    if isinstance(copies[name], Perturbed):  # a split kernel that also has per-copy gradients elsewhere
        copies[name] = copies[name].materialize()
    return copies.unbound(name)[k]


class _Copies(dict):
    """{parameter name: (M, *shape) copies}, with the per-sub-batch views computed once."""

    def unbound(self, name: str) -> tuple[torch.Tensor, ...]:
        cache = self.__dict__.setdefault("_unbound", {})
        if name not in cache:
            cache[name] = self[name].unbind(0)
        return cache[name]


class Perturbed:
    """M copies ``base + delta[k]`` of a parameter whose gradient is only ever summed over k.

    The split kernels never materialise these copies for convolutions and linear layers: they
    rebuild each copy in the backward and accumulate one weight gradient, instead of keeping M
    copies and M gradients alive (8 x the weights for M = 8). Everything else materialises them.
    """

    def __init__(self, base: torch.Tensor, delta: torch.Tensor) -> None:
        self.base, self.delta = base, delta.detach()

    def materialize(self) -> torch.Tensor:
        return self.base.unsqueeze(0) + self.delta  # the delta carries no gradient

    @property
    def shape(self) -> torch.Size:
        return self.delta.shape


def _summed_only(module: nn.Module, copies: dict) -> bool:
    """Whether every copy of this module is a :class:`Perturbed` (gradient summed over sub-batches)."""
    return bool(copies) and all(isinstance(copies[n], Perturbed) for n in copies)


def _perturbed_args(module, copies):
    weight, bias = module.weight, module.bias
    delta_w = copies["weight"].delta if "weight" in copies else torch.zeros(1, device=weight.device).expand(
        copies["bias"].shape[0], *weight.shape)
    delta_b = copies["bias"].delta if "bias" in copies else None
    return weight, bias, delta_w.to(weight.dtype), None if delta_b is None else delta_b.to(weight.dtype)


def _split_conv(module, copies, m, x):
    if _summed_only(module, copies) and module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return SplitConv.apply(x, *_perturbed_args(module, copies), module)
    outs = [module._conv_forward(xk, _get(module, copies, "weight", k), _get(module, copies, "bias", k))
            for k, xk in enumerate(x.chunk(m))]
    return torch.cat(outs)


def _fused_conv(module, copies, m, x):
    if module.padding_mode != "zeros" or isinstance(module.padding, str) and module.padding != "valid":
        return _split_conv(module, copies, m, x)
    weight = copies.get("weight", module.weight.expand(m, *module.weight.shape))  # (M, O, C/g, *k)
    mb, c, *spatial = x.shape
    b = mb // m
    stacked = x.reshape(m, b, c, *spatial).transpose(0, 1).reshape(b, m * c, *spatial)
    conv = _CONV_FN[len(spatial)]
    out = conv(stacked, weight.reshape(-1, *weight.shape[2:]).to(x.dtype), None, module.stride,
               0 if module.padding == "valid" else module.padding, module.dilation, module.groups * m)
    o, out_spatial = weight.shape[1], out.shape[2:]
    out = out.reshape(b, m, o, *out_spatial).transpose(0, 1)  # (M, b, O, ...)
    bias = copies.get("bias", None if module.bias is None else module.bias.expand(m, o))
    if bias is not None:
        out = out + bias.view(m, 1, o, *[1] * len(out_spatial)).to(out.dtype)
    return out.reshape(mb, o, *out_spatial)


def _split_linear(module, copies, m, x):
    if _summed_only(module, copies):
        return SplitLinear.apply(x, *_perturbed_args(module, copies))
    return torch.cat([F.linear(xk, _get(module, copies, "weight", k), _get(module, copies, "bias", k))
                      for k, xk in enumerate(x.chunk(m))])


def _fused_linear(module, copies, m, x):
    weight = copies.get("weight", module.weight.expand(m, *module.weight.shape))  # (M, out, in)
    grouped = x.reshape(m, -1, x.shape[-1])  # (M, b * ..., in): sub-batches are contiguous
    out = torch.bmm(grouped, weight.transpose(1, 2).to(grouped.dtype))
    bias = copies.get("bias", None if module.bias is None else module.bias.expand(m, weight.shape[1]))
    if bias is not None:
        out = out + bias[:, None].to(out.dtype)
    return out.reshape(*x.shape[:-1], weight.shape[1])


def _affine(normalized: torch.Tensor, module: nn.Module, copies: dict[str, torch.Tensor], m: int,
            channel_dims: list[int]) -> torch.Tensor:
    """normalized * scale_m + shift_m, with per-sub-batch copies where present."""
    grouped = normalized.reshape(m, normalized.shape[0] // m, *normalized.shape[1:])  # (M, b, ...)

    def broadcastable(name: str) -> torch.Tensor | None:
        value = copies.get(name, getattr(module, name, None))
        if value is None:
            return None
        shape = [m if name in copies else 1] + [1] * normalized.dim()
        for d, size in zip(channel_dims, value.shape[-len(channel_dims):]):
            shape[d + 1] = size
        return value.reshape(shape).to(grouped.dtype)

    scale, shift = broadcastable("weight"), broadcastable("bias")
    if scale is not None and shift is not None:
        out = torch.addcmul(shift, grouped, scale)  # one pass instead of a multiply and an add
    else:
        out = grouped * scale if scale is not None else grouped + shift if shift is not None else grouped
    return out.reshape(normalized.shape)


def _batchnorm(module, copies, m, x, group):
    return _affine(whole_batch_norm(module, x, group), module, copies, m, [1])


def _layernorm(module, copies, m, x):
    shape = module.normalized_shape
    dims = list(range(x.dim() - len(shape), x.dim()))
    return _affine(F.layer_norm(x, shape, None, None, module.eps), module, copies, m, dims)


def _groupnorm(module, copies, m, x):
    return _affine(F.group_norm(x, module.num_groups, None, None, module.eps), module, copies, m, [1])


def _generic(module, copies, m, *args, **kwargs):
    """Any other leaf module (nn.MultiheadAttention, user layers): its own forward once per sub-batch.

    The inputs are split along the batch dimension (dim 1 for a sequence-first MultiheadAttention);
    the module must treat samples independently, as every layer but BatchNorm does.
    """
    dim = 1 if isinstance(module, nn.MultiheadAttention) and not module.batch_first else 0
    batch = args[0].shape[dim]

    def part(value, k, d=dim):
        if isinstance(value, torch.Tensor) and value.dim() > d and value.shape[d] == batch:
            return value.chunk(m, d)[k]
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch:  # e.g. key_padding_mask
            return value.chunk(m, 0)[k]
        return value

    outputs = []
    for k in range(m):
        with _parameters_replaced(module, {name: copy[k] for name, copy in copies.items()}):
            outputs.append(type(module).forward(module, *[part(a, k) for a in args],
                                                **{key: part(v, k) for key, v in kwargs.items()}))
    if isinstance(outputs[0], torch.Tensor):
        return torch.cat(outputs, dim)
    return type(outputs[0])(None if parts[0] is None else torch.cat(parts, dim if i == 0 else 0)
                            for i, parts in enumerate(zip(*outputs)))


@contextlib.contextmanager
def _parameters_replaced(module: nn.Module, values: dict[str, torch.Tensor]) -> Iterator[None]:
    saved = []
    try:
        for name, value in values.items():
            *path, attr = name.split(".")
            holder = module.get_submodule(".".join(path)) if path else module
            saved.append((holder, attr, holder._parameters[attr]))
            holder._parameters[attr] = value  # read by attribute access; restored below
        yield
    finally:
        for holder, attr, param in reversed(saved):
            holder._parameters[attr] = param


def _forward_for(module: nn.Module, kernels: str):
    conv = isinstance(module, nn.modules.conv._ConvNd) and not module.transposed
    if conv:
        return _fused_conv if kernels == "fused" else _split_conv
    if type(module) is nn.Linear or isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward:
        return _fused_linear if kernels == "fused" else _split_linear
    if isinstance(module, nn.LayerNorm) and type(module).forward is nn.LayerNorm.forward:
        return _layernorm
    if isinstance(module, nn.GroupNorm) and type(module).forward is nn.GroupNorm.forward:
        return _groupnorm
    return _generic


EXECUTORS = ("auto", "fused", "split", "loop")
BATCHNORM_MODES = ("whole", "ghost")


def plan(executor: str, batchnorm: str, model: nn.Module, params: list[torch.Tensor], device: torch.device
         ) -> tuple[str, dict[nn.Module, dict[str, int]] | None]:
    """How a step runs: ("loop", None), or (kernels, owners) for :func:`subbatch_forward`.

    "loop" (M forward/backward passes of the whole model) normalises BatchNorm per sub-batch, so it
    is chosen only for ``batchnorm="ghost"`` or for models without a BatchNorm in train mode, where
    it computes the same as the per-layer executors. "auto" picks "fused" on CUDA; elsewhere "split"
    for models with BatchNorm and the loop without (M small passes stay in cache on a CPU).

    Raises:
        ValueError: when the requested combination cannot give whole-batch BatchNorm.
    """
    batchnorm_in_train = has_train_batchnorm(model)
    if batchnorm == "ghost":
        return "loop", None
    if executor == "auto" and device.type != "cuda" and not batchnorm_in_train:
        return "loop", None  # the same math without BatchNorm, and the fastest on CPU (docs/performance.md)
    if executor == "loop":
        if batchnorm_in_train:
            raise ValueError("executor='loop' normalises BatchNorm per sub-batch; pass batchnorm='ghost' to ask "
                             "for that, or use executor='auto'")
        return "loop", None
    owners = parameter_owners(model, params)
    if isinstance(owners, str):
        if executor == "auto" and not batchnorm_in_train:
            return "loop", None
        raise ValueError(f"executor={executor!r} cannot run every selected parameter per sub-batch ({owners}); "
                         "select other parameters, or pass batchnorm='ghost' for per-sub-batch BatchNorm")
    if executor == "auto":
        executor = "fused" if device.type == "cuda" else "split"
    return executor, owners


def check_modes(executor: str, batchnorm: str) -> None:
    """``ValueError`` for an unknown executor or BatchNorm mode, or ghost BatchNorm with a per-layer executor."""
    if executor not in EXECUTORS:
        raise ValueError(f"Invalid executor: {executor!r} (choose from {', '.join(EXECUTORS)})")
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"Invalid batchnorm: {batchnorm!r} (choose from {', '.join(BATCHNORM_MODES)})")
    if batchnorm == "ghost" and executor not in ("auto", "loop"):
        raise ValueError(f"batchnorm='ghost' runs the loop executor; executor={executor!r} is whole-batch only")


class SubBatchRun:
    """Handle of :func:`subbatch_forward`; :meth:`check` refuses a forward that skipped a copy."""

    def __init__(self) -> None:
        self.calls: dict[nn.Module, int] = {}
        self.names: dict[nn.Module, str] = {}

    def check(self) -> None:
        """Raise if a module with copies was never called: its noise would have been dropped."""
        skipped = [self.names[mod] for mod, calls in self.calls.items() if calls == 0]
        if skipped:
            raise RuntimeError(f"per-sub-batch weights were not applied to {', '.join(skipped)}: their forward was "
                               "never called (a parent reads the weight directly); choose other parameters "
                               "or executor='loop'")


@contextlib.contextmanager
def subbatch_forward(model: nn.Module, owners: dict[nn.Module, dict[str, int]], copies: list[torch.Tensor],
                     m: int, kernels: str = "split", group: dist.ProcessGroup | None = None
                     ) -> Iterator[SubBatchRun]:
    """Within the block, sub-batch k of every forward runs at weights ``copies[i][k]``.

    Args:
        model: the (unwrapped) network; batches must be ordered sub-batch-major.
        owners: from :func:`parameter_owners` for the parameters ``copies`` belong to.
        copies: per parameter, an (M, *shape) tensor of its M sub-batch values, or a
            :class:`Perturbed` when only the sum of their gradients is needed.
        m: the number of sub-batches M.
        kernels: "fused" (grouped / batched kernels) or "split" (M kernels per layer).
        group: synchronise BatchNorm statistics over this process group (None: this process only).
    """
    if kernels not in KERNELS:
        raise ValueError(f"Invalid kernels: {kernels!r} ({' or '.join(KERNELS)})")
    run = SubBatchRun()
    names = {module: name for name, module in model.named_modules()}
    patched = []
    try:
        for module in model.modules():
            own = _Copies({name: copies[i] for name, i in owners.get(module, {}).items()})
            if not (kernels == "split" and _forward_for(module, kernels) in (_split_conv, _split_linear)):
                own = _Copies({n: c.materialize() if isinstance(c, Perturbed) else c for n, c in own.items()})
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                if not own and group is None:
                    continue  # nn.BatchNorm's own forward already normalises over this process's batch
                fn = types.MethodType(lambda self, x, own=own: _batchnorm(self, own, m, x, group), module)
            elif own:
                impl = _forward_for(module, kernels)
                run.calls[module], run.names[module] = 0, names[module] or type(module).__name__

                def fn(self, *args, impl=impl, own=own, **kwargs):
                    run.calls[self] += 1
                    return impl(self, own, m, *args, **kwargs)
                fn = types.MethodType(fn, module)
            else:
                continue
            module.forward = fn
            patched.append(module)
        yield run
    finally:
        for module in patched:
            del module.forward  # back to the class's forward
