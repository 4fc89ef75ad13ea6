"""Stopping a run cleanly: a scheduler's signal (SIGTERM, SIGINT, SIGUSR1) or the checkpoint clock.

The handlers only set a flag, so the step in progress finishes and the checkpoint write is never
interrupted (a second signal while stopping is noted and changes nothing). The trainer asks
:meth:`StopSignals.poll` once per step. Under torchrun every rank must act at the same step, or a
rank would wait for a collective the others never join: the flags of all ranks are all-reduced
(MAX), launched asynchronously after step s and read after step s + 1, so the read waits only for
work that has already finished and the step loop keeps the device busy. Every rank then sees the
same value at the same step.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

# The exit code of a run stopped by a signal after writing its checkpoint: sysexits' EX_TEMPFAIL
# ("temporary failure; the user is invited to retry"), distinct from success (0), a crash (1), bad
# input (2), a non-finite loss (3) and an interrupt without checkpoint (130).
EXIT_PREEMPTED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Preempted(Exception):
    """A run stopped on a signal after writing its checkpoint; the message says how to resume."""

    def __init__(self, signal_name: str, step: int, checkpoint: str) -> None:
        super().__init__(f"stopped by {signal_name} at step {step}; checkpoint {checkpoint}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


@dataclass
class Decision:
    """What every rank does after this step: write a checkpoint (clock or signal), then stop (signal)."""

    checkpoint: bool = False
    stop: bool = False


class StopSignals:
    """Per-step decisions from the signal flag and the checkpoint clock, agreed by every rank.

    Args:
        checkpoint_minutes: a checkpoint at least this often (0: never by the clock).
        device: where the all-reduced flags live (the process group's device).
    """

    def __init__(self, checkpoint_minutes: float, device: torch.device) -> None:
        self.received: str | None = None  # the name of the first signal
        self.interval = checkpoint_minutes * 60.0
        self.last_checkpoint = time.monotonic()
        self.distributed = dist.is_initialized() and dist.get_world_size() > 1
        self.device = device
        self._pending: tuple[torch.Tensor, object] | None = None

    def handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name

    def checkpointed(self) -> None:
        """A checkpoint was written now (the clock restarts)."""
        self.last_checkpoint = time.monotonic()

    def _local(self) -> Decision:
        due = self.interval > 0 and time.monotonic() - self.last_checkpoint >= self.interval
        return Decision(checkpoint=due or self.received is not None, stop=self.received is not None)

    def poll(self) -> Decision:
        """The decision after the step just launched (one step late under torchrun, the same on every rank)."""
        local = self._local()
        if not self.distributed:
            return local
        if local.checkpoint:  # asked for once: the checkpoint follows a step later, the clock restarts now
            self.last_checkpoint = time.monotonic()
        flags = torch.tensor([local.checkpoint, local.stop], dtype=torch.int32, device=self.device)
        work = dist.all_reduce(flags, op=dist.ReduceOp.MAX, async_op=True)
        previous, self._pending = self._pending, (flags, work)
        if previous is None:
            return Decision()
        previous[1].wait()
        checkpoint, stop = (bool(v) for v in previous[0].tolist())
        return Decision(checkpoint=checkpoint, stop=stop)

    def any_received(self) -> bool:
        """Whether any rank received a signal (a collective under torchrun: every rank calls it)."""
        if not self.distributed:
            return self.received is not None
        flag = torch.tensor([self.received is not None], dtype=torch.int32, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def stopped(self, step: int, checkpoint: str) -> Preempted:
        """The exception that ends the loop at ``step`` (the signal may have reached another rank only)."""
        return Preempted(self.received or "a signal on another rank", step, checkpoint)

    def drain(self) -> None:
        """Wait for the flags still in flight (every rank calls it at the end of the loop)."""
        if self._pending is not None:
            self._pending[1].wait()
            self._pending = None


@contextlib.contextmanager
def stop_signals(checkpoint_minutes: float, device: torch.device) -> Iterator[StopSignals]:
    """Install the handlers of :data:`STOP_SIGNALS` for the block (main thread only), then restore them."""
    stops = StopSignals(checkpoint_minutes, device)
    if threading.current_thread() is not threading.main_thread():
        yield stops  # signals reach only the main thread: the clock still works
        return
    previous = {sig: signal.signal(sig, stops.handle) for sig in STOP_SIGNALS}
    try:
        yield stops
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
