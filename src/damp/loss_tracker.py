"""The training loss on the device: its sum over a logging interval and the first non-finite step,
read by the host once per interval (no host sync in the step loop).
"""

from __future__ import annotations

from typing import Protocol

import torch


class Training(Protocol):
    """What the error message reads from the run: its learning rate and its method."""

    optimizer: torch.optim.Optimizer
    method: object


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the message names the step, loss, lr and method."""


class LossTracker:
    """Sums losses and remembers the first non-finite step on the device, read once per interval."""

    def __init__(self, device: torch.device, start: float = 0.0) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.loss_sum = torch.full((), start, device=device, dtype=torch.float64)

    def add(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss)
        self.first_bad = torch.where((self.first_bad < 0) & bad, torch.full_like(self.first_bad, step + 1),
                                     self.first_bad)
        self.loss_sum += loss.double()

    def check(self, run: Training) -> None:
        """Raise NonFiniteLossError on every rank together if a loss so far was NaN/inf (host sync)."""
        bad_step = int(self.first_bad)
        if torch.distributed.is_initialized():  # every rank stops together, or the healthy ones would hang
            flag = torch.tensor([bad_step], device=self.first_bad.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            bad_step = int(flag)
        if bad_step >= 0:
            raise NonFiniteLossError(
                f"non-finite loss ({float(self.loss_sum)}) at step {bad_step} "
                f"(lr {run.optimizer.param_groups[0]['lr']:.4g}, method {run.method!r}); the last good checkpoint "
                "is kept: fix the cause (e.g. --set method.std=...) and run again with --resume")

    def peek(self, run: Training) -> float:
        """The sum so far, left in place (after :meth:`check`)."""
        self.check(run)
        return float(self.loss_sum)

    def flush(self, run: Training) -> float:
        """The interval's loss sum (host sync), then zero; after :meth:`check`."""
        total = self.peek(run)
        self.loss_sum.zero_()
        return total
