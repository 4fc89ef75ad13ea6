"""The paper's optimisers and learning-rate schedules.

- ResNets: Nesterov momentum 0.9 with *coupled* L2 (optax `add_decayed_weights` -> `trace(nesterov)`,
  which is torch.optim.SGD's weight_decay), on the step schedule below. CIFAR/Tiny decay every
  parameter; the ImageNet recipes decay conv/linear kernels only.
- ViT: AdamW (0.9, 0.999, 1e-8), decoupled weight decay on kernels only, global-norm clipping 1.0,
  linear warm-up then cosine (paper App. F; official code (trungtrinh44/DAMP) training scripts;
  docs/fidelity.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from damp.methods.perturb import NORM_MODULES, perturbed_parameters

OPTIMIZERS = ("sgd", "adamw")  # sgd: Nesterov momentum with coupled L2; adamw: decoupled decay
SCHEDULES = ("step", "warmup_cosine", "constant")


def step_decay_factor(step: int, total_steps: int, lr_ratio: float, start: float = 0.5, end: float = 0.9
                      ) -> float:
    """The official DAMP ResNet schedule as a multiplier of the base lr.

    Constant until ``start`` of training, linear decay to ``lr_ratio`` at ``end``, then constant
    (paper App. F: lr 0.1 until epoch 150, linear to 0.001 at epoch 270, of 300).

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


def kernel_parameters(model: nn.Module) -> set[int]:
    """ids of conv/linear kernels (the official code's `kernel` leaves: no norm scales, no biases)."""
    scales = {id(m.weight) for m in model.modules() if isinstance(m, NORM_MODULES) and m.weight is not None}
    return {id(p) for _, p in perturbed_parameters(model) if id(p) not in scales}


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """``cfg``: OptimConfig. Weight decay on every parameter, or on kernels only."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.decay_kernels_only:
        kernels = kernel_parameters(model)
        groups = [{"params": [p for p in params if id(p) in kernels], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if id(p) not in kernels], "weight_decay": 0.0}]
    else:
        groups = [{"params": params, "weight_decay": cfg.weight_decay}]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def build_scheduler(cfg, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR for ``cfg.schedule`` ("step", "warmup_cosine", "constant")."""
    if cfg.schedule == "step":
        def factor(s: int) -> float:
            return step_decay_factor(s, total_steps, cfg.lr_ratio, cfg.decay_start, cfg.decay_end)
    elif cfg.schedule == "warmup_cosine":
        warmup = cfg.warmup_steps or int(round(cfg.warmup_epochs * steps_per_epoch))

        def factor(s: int) -> float:
            return warmup_cosine_factor(s, total_steps, warmup, cfg.warmup_start_factor, cfg.final_factor)
    else:
        def factor(s: int) -> float:
            return 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
