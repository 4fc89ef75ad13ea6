"""Training loop core and the paper's learning-rate schedules.

The loop keeps nanoGPT's order: zero_grad -> method.backward -> (unscale, clip) -> step -> schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from damp.log import progress_bar
from damp.methods import Method


def step_decay_factor(step: int, total_steps: int, lr_ratio: float, start: float = 0.5, end: float = 0.9
                      ) -> float:
    """The official DAMP ResNet schedule as a multiplier of the base lr.

    Constant until ``start`` of training, linear decay to ``lr_ratio`` at ``end``, then constant
    (paper.md §2: lr 0.1 until epoch 150, linear to 0.001 at epoch 270, of 300).

    >>> [round(step_decay_factor(s, 10, 0.01), 3) for s in (0, 5, 7, 9, 10)]
    [1.0, 1.0, 0.505, 0.01, 0.01]
    """
    t = step / max(total_steps, 1)
    if t <= start:
        return 1.0
    if t >= end:
        return lr_ratio
    return 1.0 + (lr_ratio - 1.0) * (t - start) / (end - start)


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, start_factor: float = 0.0,
                         end_factor: float = 0.0) -> float:
    """Linear warm-up from ``start_factor`` to 1 over ``warmup_steps``, then cosine to ``end_factor``.

    >>> [round(warmup_cosine_factor(s, 10, 2), 3) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    t = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def fit(model: nn.Module, method: Method, loader: Iterable, optimizer: torch.optim.Optimizer, *, epochs: int,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, progress: bool = False,
        desc: str = "train") -> list[float]:
    """Train ``model`` in place with ``method`` for ``epochs``; returns the mean training loss per epoch.

    The scheduler, if any, steps once per optimizer step. Losses stay on the device and are synced
    once per epoch (no host sync in the step loop).
    """
    history: list[float] = []
    model.train()
    bar = progress_bar(epochs * len(loader), desc, progress)
    with bar:
        for epoch in range(epochs):
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            losses = []
            for x, y in loader:
                optimizer.zero_grad(set_to_none=True)
                losses.append(method.backward(model, x, y, loss_fn))
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                bar.update()
            history.append(torch.stack(losses).mean().item())
            bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.3f}")
    return history
