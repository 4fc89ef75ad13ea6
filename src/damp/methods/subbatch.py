"""How a sub-batch method runs its M sub-batches: a :data:`Plan`, and the per-layer executor.

DAMP, DAAP, SAM and ASAM evaluate sub-batch m of a batch at its own weights w_m. The official code
does this with ``vmap`` over sub-batches and a BatchNorm whose statistics are synchronised over the
whole batch of every device (docs/fidelity.md, "BatchNorm and sub-batches"). A step runs one of:

- :class:`PerLayer`: one forward of the whole batch in which every module that owns a perturbed
  parameter runs copy k of its parameters on sub-batch k of its input (methods/layer_kernels.py),
  and every other layer, BatchNorm included, sees the whole batch. ``kernels`` is "fused" (grouped
  convolutions, batched matmuls: CUDA), "split" (M kernels per layer) or "cpu" (fused for layers
  with few input channels, a convolution only on NCHW input, split for the others: the CPU default); same math.
- :class:`Loop`: M forward/backward passes of the whole model at in-place perturbed weights. Its
  BatchNorm normalises each sub-batch, so it runs only without BatchNorm in train mode (where it
  computes the same as PerLayer) or when ghost BatchNorm is asked for.
- :class:`PerLayerIfItFits`: "auto" on CPU without BatchNorm. The loop is right for any model; the
  per-layer kernels are usually faster (docs/performance.md, "Earlier runs (contiguous NCHW
  batches)", paragraph "Executors without BatchNorm") but apply only when every perturbed layer is
  called as ``layer(x)`` on a sub-batch-major input. On its first step a dry forward of one
  sub-batch (eager, no gradient, the RNG state restored) checks that with forward pre-hooks
  (:func:`owners_fit`); the plan becomes ``per_layer`` if it holds, else the loop.

::

    method.backward ── plan() ──> Loop ─────> M passes at w * xi_m, restored bit-exactly
                               ├> PerLayerIfItFits ─> owners_fit(first sub-batch)? PerLayer : Loop (once)
                               └> PerLayer ─> executor(model).running(copies): one pass;
                                              conv/linear/norm -> LAYER_KERNELS[type] (fused | split | few_channels),
                                              other leaves -> generic (functional_call per sub-batch)

Each method caches the executor of a model, which keeps its patched forwards, so ``torch.compile`` traces a
step once: per step only the tensors in its slots change.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from damp.methods.copies import Copies
from damp.methods.layer_kernels import generic, kernel_for

EXECUTORS = ("auto", "fused", "split", "loop")
BATCHNORM_MODES = ("whole", "ghost")


@dataclasses.dataclass(frozen=True)
class Loop:
    """M passes of the whole model at in-place perturbed weights (BatchNorm per sub-batch)."""


@dataclasses.dataclass(frozen=True, eq=False)
class PerLayer:
    """One pass; ``owners`` maps each module that runs copies to {local parameter name: index}."""

    kernels: str
    owners: dict[nn.Module, dict[str, int]]


@dataclasses.dataclass(frozen=True, eq=False)
class PerLayerIfItFits:
    """``per_layer`` if :func:`owners_fit` on the first batch, else :class:`Loop` (the same math)."""

    per_layer: PerLayer


Plan = Loop | PerLayer | PerLayerIfItFits


def describe(chosen: Loop | PerLayer) -> str:
    """A settled plan's name in reports (:func:`settle`): "loop", or its kernels ("fused", "split", "cpu")."""
    return chosen.kernels if isinstance(chosen, PerLayer) else "loop"


class UnsupportedParameter(ValueError):
    """A selected parameter that no module can run per sub-batch."""


def has_train_batchnorm(model: nn.Module) -> bool:
    """Whether any BatchNorm layer of ``model`` normalises with batch statistics (train mode)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)
               for m in model.modules())


def _local_parameters(module: nn.Module) -> dict[str, nn.Parameter | None]:
    """The parameters ``module`` reads itself; nn.MultiheadAttention also reads its ``out_proj``'s."""
    local = {}
    if isinstance(module, nn.MultiheadAttention):
        local = {f"out_proj.{n}": p for n, p in module.out_proj._parameters.items()}
    local.update(module._parameters)
    return local


def parameter_owners(model: nn.Module, params: list[torch.Tensor]) -> dict[nn.Module, dict[str, int]]:
    """Map each module that will run copies to {its local parameter name: index into ``params``}.

    Raises:
        UnsupportedParameter: naming a parameter held by a module with children (such as a ViT's
            position embedding), or counting selected parameters that no module holds.
    """
    index: dict[int, int] = {}
    for i, p in enumerate(params):
        index.setdefault(id(p), i)
    owners: dict[nn.Module, dict[str, int]] = {}
    claimed: set[int] = set()
    for module_name, module in model.named_modules():
        leaf = isinstance(module, nn.MultiheadAttention) or next(module.children(), None) is None
        for name, p in _local_parameters(module).items():
            if p is None or id(p) not in index or id(p) in claimed:
                continue
            if not leaf:
                raise UnsupportedParameter(
                    f"parameter {module_name + '.' if module_name else ''}{name} belongs to a module with children")
            owners.setdefault(module, {})[name] = index[id(p)]
            claimed.add(id(p))
    if len(claimed) < len(index):
        raise UnsupportedParameter(f"{len(index) - len(claimed)} selected parameters belong to no module of the model")
    return owners


def check_modes(executor: str, batchnorm: str) -> None:
    """``ValueError`` for an unknown executor or BatchNorm mode, or ghost BatchNorm with a per-layer executor."""
    if executor not in EXECUTORS:
        raise ValueError(f"Invalid executor: {executor!r} (choose from {', '.join(EXECUTORS)})")
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"Invalid batchnorm: {batchnorm!r} (choose from {', '.join(BATCHNORM_MODES)})")
    if batchnorm == "ghost" and executor not in ("auto", "loop"):
        raise ValueError(f"batchnorm='ghost' runs the loop executor; executor={executor!r} is whole-batch only")


def plan(executor: str, batchnorm: str, model: nn.Module, params: list[torch.Tensor], device: torch.device
         ) -> Plan:
    """How a step runs. "auto" picks fused kernels on CUDA; on CPU the "cpu" kernels (fused or split per
    layer, :func:`~damp.methods.layer_kernels.cpu_kernels`), checked on the first batch for a model
    without BatchNorm (:class:`PerLayerIfItFits`).

    The loop also runs for ``batchnorm="ghost"``, for ``executor="loop"`` without BatchNorm in train
    mode, and under "auto" for a model without BatchNorm whose parameters not every layer can run per
    sub-batch with a kernel of its own (:data:`~damp.methods.layer_kernels.LAYER_KERNELS`).

    Raises:
        ValueError: when the requested combination cannot give whole-batch BatchNorm.
    """
    if batchnorm == "ghost":
        return Loop()
    batchnorm_in_train = has_train_batchnorm(model)
    if executor == "loop":
        if batchnorm_in_train:
            raise ValueError("executor='loop' normalises BatchNorm per sub-batch; pass batchnorm='ghost' to ask "
                             "for that, or use executor='auto'")
        return Loop()
    try:
        owners = parameter_owners(model, params)
    except UnsupportedParameter as err:
        if executor == "auto" and not batchnorm_in_train:
            return Loop()  # the same math without BatchNorm
        raise ValueError(f"executor={executor!r} cannot run every selected parameter per sub-batch ({err}); "
                         "select other parameters, or pass batchnorm='ghost' for per-sub-batch BatchNorm") from None
    if executor != "auto":
        return PerLayer(executor, owners)
    if device.type == "cuda":
        return PerLayer("fused", owners)
    if batchnorm_in_train:
        return PerLayer("cpu", owners)
    if any(kernel_for(module, "cpu") is generic for module in owners):
        return Loop()  # the same math; a generic layer runs M functional calls, no faster than the loop
    return PerLayerIfItFits(PerLayer("cpu", owners))


class SubBatchExecutor:
    """The per-layer executor of one model and plan: patched forwards built once, slots filled per step.

    Inside :meth:`running`, sub-batch k of every forward of the model runs at copy k of each
    parameter; BatchNorm layers normalise over the whole batch (of every process of ``group``).
    """

    def __init__(self, model: nn.Module, plan: PerLayer, m: int, group: dist.ProcessGroup | None) -> None:
        self.model, self.plan, self.m, self.group = model, plan, m, group
        self.slots: dict[nn.Module, dict[str, Copies]] = {}
        self.calls: dict[nn.Module, int] = {}
        names = {module: name for name, module in model.named_modules()}
        self.names = {module: names[module] or type(module).__name__ for module in plan.owners}
        self.forwards = {}
        for module in model.modules():
            # A BatchNorm without copies keeps nn.BatchNorm's own (faster) forward on one process:
            # it normalises over the whole batch already.
            synced_norm = group is not None and isinstance(module, nn.modules.batchnorm._BatchNorm)
            if module in plan.owners or synced_norm:
                self.slots[module] = {}
                self.forwards[module] = self._forward(module, kernel_for(module, plan.kernels))

    def _forward(self, module: nn.Module, kernel):
        slots, calls, m, group = self.slots[module], self.calls, self.m, self.group
        counted = module in self.plan.owners

        def forward(*args, **kwargs):
            if counted:
                calls[module] += 1
                if calls[module] == 2:  # a gradient buffer serves one call; two backwards would both write it
                    slots.update({name: c._replace(grad_buffer=None) for name, c in slots.items()
                                  if c.grad_buffer is not None})
            return kernel(module, slots, m, group, *args, **kwargs)
        return forward

    @contextlib.contextmanager
    def running(self, copies: list[Copies]) -> Iterator[None]:
        """Within the block, forwards of the model run sub-batch k at ``copies[i].values[k]``.

        Raises:
            RuntimeError: on leaving, if a module with copies was never called (a parent read its
                weight directly), since its noise would have been dropped.
        """
        for module, local in self.plan.owners.items():
            self.slots[module].update({name: copies[i] for name, i in local.items()})
            self.calls[module] = 0
        try:
            for module, forward in self.forwards.items():
                module.forward = forward
            yield
        finally:
            for module in self.forwards:
                vars(module).pop("forward", None)  # back to the class's forward
            for slot in self.slots.values():
                slot.clear()  # hold no tensors between steps
        skipped = [self.names[mod] for mod, calls in self.calls.items() if calls == 0]
        if skipped:
            raise RuntimeError(f"per-sub-batch weights were not applied to {', '.join(skipped)}: their forward was "
                               "never called (a parent reads the weight directly); choose other parameters "
                               "or executor='loop'")


def owners_fit(model: nn.Module, owners: dict[nn.Module, dict[str, int]], subbatch: torch.Tensor) -> bool:
    """Whether every owner is called as ``owner(x)`` with ``x.shape[0]`` the sub-batch size, so the per-layer
    kernels would split its input by sub-batch, in a forward of one ``subbatch``.

    The forward is eager (a compiled model's original module), without gradients, with the global RNG
    state restored, so it changes nothing a training step sees. A forward that raises means no.
    """
    leading: dict[nn.Module, list[int | None]] = {module: [] for module in owners}

    def record(module: nn.Module, args: tuple) -> None:
        first = args[0] if args else None
        leading[module].append(first.shape[0] if isinstance(first, torch.Tensor) and first.dim() else None)

    handles = [module.register_forward_pre_hook(record) for module in owners]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model(subbatch)
    except Exception:  # noqa: BLE001 - any failure keeps the loop, which the real step then runs
        return False
    finally:
        for handle in handles:
            handle.remove()
    size = subbatch.shape[0]
    return all(dims and all(d == size for d in dims) for dims in leading.values())


def settle(chosen: Plan, model: nn.Module, inputs: torch.Tensor, m: int) -> Loop | PerLayer:
    """The plan a step on (B, ...) ``inputs`` in M sub-batches runs: a :class:`PerLayerIfItFits` becomes
    its ``per_layer`` if :func:`owners_fit` on the first sub-batch, else :class:`Loop`; others are as given."""
    if not isinstance(chosen, PerLayerIfItFits):
        return chosen
    return chosen.per_layer if owners_fit(model, chosen.per_layer.owners, inputs[:inputs.shape[0] // m]) else Loop()


_CACHED_PLANS = 8  # per method: enough for every model a method runs on in a benchmark or a test


def executor_for(model: nn.Module, params: list[torch.Tensor], executor: str, batchnorm: str, m: int,
                 group: dist.ProcessGroup | None, cache: dict, inputs: torch.Tensor) -> SubBatchExecutor | Loop:
    """The executor of a step on ``inputs``: :class:`Loop` or the model's :class:`SubBatchExecutor`.

    ``cache`` belongs to the calling method. It is keyed by the model, the requested modes, the
    parameters, M, the group and the modules' train/eval modes, so changing any of them plans
    again; each entry holds its model, so a key's ids stay that model's. A :class:`PerLayerIfItFits`
    plan is settled by :func:`owners_fit` on the first sub-batch of ``inputs``.
    """
    device = params[0].device if params else torch.device("cpu")
    key = (id(model), executor, batchnorm, tuple(id(p) for p in params), m, id(group), device.type,
           tuple(module.training for module in model.modules()))
    if key not in cache:
        chosen = settle(plan(executor, batchnorm, model, params, device), model, inputs, m)
        if len(cache) >= _CACHED_PLANS:
            del cache[next(iter(cache))]  # the oldest
        cache[key] = (model, chosen if isinstance(chosen, Loop) else SubBatchExecutor(model, chosen, m, group))
    return cache[key][1]
