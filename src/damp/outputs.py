"""Everything a training run writes besides its results: metrics log, timing, TensorBoard, progress
bar and checkpoints, owned by one :class:`RunOutputs` (rank 0 writes; every rank joins checkpoints).

The metrics log holds no wall-clock values, so a resumed run's log equals an uninterrupted one;
timings go to ``timing.jsonl``.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

from damp.checkpoint import save_checkpoint
from damp.dist import barrier, is_main
from damp.log import progress_bar


class MetricsLog:
    """Deterministic per-interval metrics as JSONL or CSV; truncated on resume.

    Training rows hold (step, epoch, loss, lr); validation rows (eval.every_epochs) hold (step, epoch,
    val_error, val_nll). In CSV the other columns stay empty.
    """

    FIELDS = ("step", "epoch", "loss", "lr", "val_error", "val_nll")

    def __init__(self, path: Path, fmt: str, resume_step: int | None) -> None:
        self.path, self.fmt = path, fmt
        rows = self._read() if resume_step is not None else []
        rows = [r for r in rows if int(r["step"]) <= (resume_step or 0)]
        with open(path, "w", newline="") as f:
            if fmt == "csv":
                csv.writer(f).writerow(self.FIELDS)
            for r in rows:
                self._write(f, r)

    def _read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            if self.fmt == "csv":
                return [r for r in csv.DictReader(f) if None not in r.values()]
            rows = []
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill: beyond the checkpoint anyway
                    continue
            return rows

    def _write(self, f, row: dict) -> None:
        if self.fmt == "csv":
            csv.writer(f).writerow([row.get(k, "") for k in self.FIELDS])
        else:
            f.write(json.dumps({k: row[k] for k in self.FIELDS if row.get(k, "") != ""}) + "\n")

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            self._write(f, row)


class RunOutputs:
    """The run's writers. Use as a context manager; only rank 0 opens files.

    Args:
        out: the run directory.
        total, start_step: the step count and where this process starts (for the progress bar).
        images_per_step: the global batch, for the images/s figures.
        resumed: keep the metrics log up to ``start_step`` instead of starting it anew.
    """

    def __init__(self, out: Path, *, desc: str, total: int, start_step: int, images_per_step: int, resumed: bool,
                 metrics_format: str, tensorboard: bool, progress: bool) -> None:
        self.out, self.images_per_step = out, images_per_step
        main = is_main()
        self.metrics = MetricsLog(out / f"metrics.{metrics_format}", metrics_format,
                                  start_step if resumed else None) if main else None
        self.timing = open(out / "timing.jsonl", "a") if main else None
        self.writer = _tensorboard(out) if tensorboard and main else None
        self.bar = progress_bar(total, desc, progress and main)
        self.bar.update(start_step)
        self.tick, self.tick_step = time.perf_counter(), start_step

    def __enter__(self) -> RunOutputs:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        for handle in (self.timing, self.writer):
            if handle is not None:
                handle.close()

    def step_done(self) -> None:
        self.bar.update()

    def log(self, row: dict) -> None:
        """One metrics row (step, epoch, loss, lr), with its images/s on the bar and in timing.jsonl."""
        if self.metrics is None:
            return
        self.metrics.append(row)
        now = time.perf_counter()
        rate = (row["step"] - self.tick_step) * self.images_per_step / max(now - self.tick, 1e-9)
        self.tick, self.tick_step = now, row["step"]
        self.timing.write(json.dumps({"step": row["step"], "images_per_s": rate}) + "\n")
        self.timing.flush()
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.3g}", img_s=f"{rate:.0f}")
        if self.writer is not None:
            self.writer.add_scalar("train/loss", row["loss"], row["step"])
            self.writer.add_scalar("train/lr", row["lr"], row["step"])

    def validation(self, row: dict) -> None:
        """A validation row (step, epoch, val_error, val_nll), also shown on the bar."""
        if self.metrics is None:
            return
        self.metrics.append(row)
        self.bar.set_postfix(val_error=f"{row['val_error']:.2f}%")
        if self.writer is not None:
            self.writer.add_scalar("val/error", row["val_error"], row["step"])
            self.writer.add_scalar("val/nll", row["val_nll"], row["step"])

    def checkpoint(self, payload: Callable[[], dict]) -> None:
        """Write ``payload()`` atomically (rank 0; every rank builds it, since it gathers RNG states)."""
        state = payload()
        if is_main():
            save_checkpoint(self.out, state)
        barrier()


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
