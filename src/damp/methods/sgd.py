"""Plain single-pass training (the SGD baseline; with dropout in the model it is the Dropout baseline).

Under torch.distributed, BatchNorm statistics are synchronised over all processes, as for every
method (methods/sync_batchnorm.py), so N processes train as one process on the global batch would.
"""

from __future__ import annotations

import torch
from torch import nn

from damp.dist import unwrap
from damp.methods.base import LossFn, Method, forward_loss, run_backward
from damp.methods.sync_batchnorm import process_group, synced_batchnorm


class SGD(Method):
    """One forward/backward pass on the whole batch at the current weights.

    The name follows the paper's baseline; the optimizer itself is whatever the caller steps.

    >>> model = nn.Linear(3, 2)
    >>> loss = SGD().backward(model, torch.randn(4, 3), torch.tensor([0, 1, 0, 1]),
    ...                       nn.functional.cross_entropy)
    >>> loss.shape, model.weight.grad.shape
    (torch.Size([]), torch.Size([2, 3]))
    """

    def __init__(self) -> None:
        super().__init__(num_perturbations=1)

    def hparams(self) -> dict:
        return {}

    def backward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn,
                 *, scaler: torch.amp.GradScaler | None = None,
                 autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        with synced_batchnorm(unwrap(model), process_group()):
            loss = forward_loss(model, inputs, targets, loss_fn, autocast_dtype)
        run_backward(loss, scaler)
        return loss.detach()
