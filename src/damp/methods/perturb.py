"""Weight perturbation helpers: which parameters are perturbed, snapshots, restoration.

This module alone changes weights in place. Every method perturbs through :class:`WeightSnapshot`,
which restores the exact bits it saved, also when the forward pass or the loss raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

NamedParams = list[tuple[str, nn.Parameter]]
ParamSelector = Callable[[nn.Module], NamedParams]

# Modules whose `weight` is a kernel (conv / linear) or a scale (normalisation gamma; NORM_MODULES,
# also what optim.py exempts from kernel-only weight decay). The official
# DAMP code perturbs Flax leaves named `kernel` or `scale` (trungtrinh44/DAMP, `filter_fn`;
# docs/fidelity.md); these are the PyTorch equivalents. Biases, norm shifts (beta), embeddings
# and position embeddings never are.
_KERNEL_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,  # Conv1d/2d/3d and the transposed variants
    nn.Linear,  # includes MultiheadAttention.out_proj
    nn.Bilinear,
)
NORM_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm* (affine)
    nn.LayerNorm,
    nn.GroupNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
# nn.MultiheadAttention keeps its q/k/v kernels as bare parameters, not in a Linear.
_ATTENTION_KERNELS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def perturbed_parameters(model: nn.Module) -> NamedParams:
    """Return the default perturbed selection of ``model`` as ``[(name, parameter), ...]``.

    Included: the ``weight`` of every convolution and linear layer, the q/k/v kernels of
    ``nn.MultiheadAttention``, and the scale (``weight``) of every BatchNorm, LayerNorm, GroupNorm
    (and RMSNorm) layer. Never included: biases, norm shifts, embeddings, or parameters with
    ``requires_grad=False``. Tied parameters appear once, under their first name.

    >>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    >>> [name for name, _ in perturbed_parameters(m)]
    ['0.weight', '1.weight', '3.weight']
    """
    selected: NamedParams = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, _KERNEL_MODULES + NORM_MODULES):
            candidates = ["weight"]
        elif isinstance(module, nn.MultiheadAttention):
            candidates = list(_ATTENTION_KERNELS)
        else:
            continue
        for attr in candidates:
            param = module._parameters.get(attr)
            if param is None or not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            selected.append((prefix + attr, param))
    return selected


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """All parameters of ``model`` that require a gradient, deduplicated, in registration order."""
    return [p for p in model.parameters() if p.requires_grad]


class WeightSnapshot:
    """An exact copy of some parameters, to perturb them freely and put the saved bits back.

    >>> lin = nn.Linear(2, 2)
    >>> before = lin.weight.detach().clone()
    >>> snap = WeightSnapshot([lin.weight])
    >>> with torch.no_grad():
    ...     _ = lin.weight.mul_(3.0)
    >>> snap.restore()
    >>> bool(torch.equal(lin.weight, before))
    True
    """

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        self.params = list(params)
        self.saved = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def restore(self) -> None:
        """Copy the saved values back into the parameters (bit-exact)."""
        if self.params:
            torch._foreach_copy_(self.params, self.saved)  # one call instead of a Python loop


@contextlib.contextmanager
def snapshot(params: Sequence[torch.Tensor]) -> Iterator[WeightSnapshot]:
    """Context manager: yield a :class:`WeightSnapshot` and restore it on exit, even on error."""
    snap = WeightSnapshot(params)
    try:
        yield snap
    finally:
        snap.restore()


def _batchnorm_buffers(model: nn.Module) -> list[torch.Tensor]:
    buffers = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            buffers += [b for b in (module.running_mean, module.running_var, module.num_batches_tracked)
                        if b is not None]
    return buffers


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Keep BatchNorm running statistics unchanged by the forward passes inside the block.

    Saves and restores the buffers rather than zeroing the momentum (davda54/sam's bypass), which
    would not work for ``momentum=None`` (cumulative averages) (cf. davda54/sam's `bypass_bn` and davda54/sam#17).
    """
    with snapshot(_batchnorm_buffers(model)):
        yield


def split_batch(inputs: torch.Tensor, targets: torch.Tensor, num_chunks: int
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split a batch into ``num_chunks`` equal, disjoint, contiguous sub-batches along dim 0.

    Raises:
        ValueError: if the batch size is not divisible by ``num_chunks`` or the sizes disagree.
    """
    batch = inputs.shape[0]
    if targets.shape[0] != batch:
        raise ValueError(f"inputs have {batch} samples but targets have {targets.shape[0]}")
    if batch == 0 or batch % num_chunks:
        raise ValueError(f"Batch size {batch} is not divisible by num_perturbations={num_chunks}")
    size = batch // num_chunks
    return list(zip(inputs.split(size), targets.split(size)))
