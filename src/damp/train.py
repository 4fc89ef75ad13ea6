"""The trainer: ``train(cfg, out)`` runs one experiment from a RunConfig, on one CPU or many GPUs.

A short pipeline of named stages, read top to bottom:

    prepare -> restore -> train_steps (train_step per batch) -> evaluate_and_write

The step keeps nanoGPT's order: zero_grad -> method.backward -> (unscale, clip) -> step -> schedule.
:class:`damp.outputs.RunOutputs` owns everything written on the way (metrics, timing, TensorBoard,
progress bar, checkpoints). Exact resume: every random draw is a function of the seed and the step
(data order, augmentation, DAMP/DAAP noise) or is checkpointed (the global RNG that dropout uses,
per rank), so a run killed at any step and resumed ends bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from damp import __version__, methods, seeding
from damp.checkpoint import load_checkpoint, write_text
from damp.config import RunConfig, dump_config, method_arguments, resolve_corruptions, to_dict
from damp.data.augmix import jsd_loss
from damp.data.batch_transforms import train_batch_transforms
from damp.data.build import DataBundle, build_data
from damp.dist import all_gather_objects, barrier, init_from_env, is_main, teardown
from damp.evaluate import check_evaluation_inputs, corruption_results, evaluate
from damp.locks import lock_on_main
from damp.loss_tracker import LossTracker
from damp.metrics import aggregate
from damp.models import model_for
from damp.optim import build_optimizer, build_scheduler
from damp.outputs import RunOutputs
from damp.preemption import StopSignals, stop_signals
from damp.run_dir import check_run_dir
from damp.runtime import autocast_dtype, resolve_device
from damp.streaming import stream_metrics


@dataclass
class Run:
    """One training run's live objects; the stages below read and advance it."""

    cfg: RunConfig
    out: Path
    rank: int
    world: int
    device: torch.device
    bundle: DataBundle
    model: nn.Module  # the plain module: checkpoints and evaluation
    method: methods.Method
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    total: int
    net: nn.Module | None = None  # what the step calls: the model, DDP-wrapped and/or compiled
    step: int = 0
    running: dict = field(default_factory=lambda: {"loss_sum": 0.0})  # partial interval sum, checkpointed
    train_seconds: float = 0.0  # wall-clock of the step loop, summed over resumed sessions (checkpointed)
    unflushed: float = 0.0  # loss sum of the steps since the last flush, at a checkpoint between flushes

    @property
    def steps_per_epoch(self) -> int:
        return len(self.bundle.train)


def train(cfg: RunConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Train and evaluate one run; writes config.yaml, metrics, checkpoints and results.json to ``out``.

    Returns the results dict (rank 0; other ranks return {}).
    """
    check_evaluation_inputs(cfg)  # fail before anything is written or trained
    device_type = "cuda" if cfg.trainer.device != "cpu" and torch.cuda.is_available() else "cpu"
    rank, world, local_rank = init_from_env(device_type)
    try:
        with lock_on_main(out):
            run, state = prepare(cfg, Path(out), rank, world, resolve_device(cfg.trainer.device, local_rank),
                                 resume, overwrite)
            restore(run, state)
            t = cfg.trainer
            with RunOutputs(run.out, desc=f"train {cfg.method.name}", total=run.total, start_step=run.step,
                            images_per_step=cfg.data.batch_size, resumed=state is not None,
                            metrics_format=t.metrics_format, tensorboard=t.tensorboard,
                            progress=t.progress) as outputs:
                train_steps(run, outputs)
            results = evaluate_and_write(run)
            barrier()
            return results
    finally:
        teardown()


def prepare(cfg: RunConfig, out: Path, rank: int, world: int, device: torch.device, resume: bool,
            overwrite: bool) -> tuple[Run, dict | None]:
    """Check the run directory, build data, model, method and optimizer, then write config.yaml.

    Returns the run and the checkpoint to restore (None for a fresh start).
    """
    state, path = check_run_dir(out, cfg, resume, overwrite) if is_main() else (None, None)
    path = all_gather_objects(path)[0]  # every rank resumes from the file rank 0 chose
    if not is_main() and path is not None:
        state = load_checkpoint(path)
    t = cfg.trainer
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    bundle = build_data(cfg, rank=rank, world_size=world, device=device, vit=cfg.model.name.startswith("vit"))
    if cfg.eval.train_metrics and bundle.train_plain is None:
        raise ValueError("eval.train_metrics: needs a resident dataset (digits, fashion_mnist, cifar, tiny_imagenet)")
    model = model_for(cfg, bundle).to(device)
    if t.precision == "fp64":  # float64 end to end, for reference checks (e.g. 1 vs N processes)
        model = model.double()
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(seeding.derive_seed(cfg.seed, seeding.DROPOUT, rank))  # dropout: per-rank stream
    optimizer = build_optimizer(cfg.optim, model)
    total = t.max_steps or t.epochs * len(bundle.train)
    run = Run(cfg, out, rank, world, device, bundle, model, build_method(cfg, world), optimizer,
              build_scheduler(cfg.optim, optimizer, total, len(bundle.train)),
              torch.amp.GradScaler(device.type) if t.precision == "fp16" else None, total)
    if is_main():  # only once everything is built, so a model or data error leaves the directory as it was
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "config.yaml")
    return run, state


def restore(run: Run, state: dict | None) -> None:
    """Load a checkpoint into the run (weights, optimizer, schedule, scaler, method, RNG), then wrap
    the model for DDP / torch.compile."""
    if state is not None:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if run.scaler is not None and state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        if state["method"]:
            run.method.load_state_dict(state["method"])
        rng = state["rng"]
        torch.set_rng_state(rng[run.rank] if run.rank < len(rng) else rng[0])
        cuda_rng = state.get("cuda_rng") or []
        if run.device.type == "cuda" and run.rank < len(cuda_rng):
            torch.cuda.set_rng_state(cuda_rng[run.rank], run.device)
        run.step, run.running = int(state["step"]), dict(state["running"])
        run.unflushed = float(state.get("unflushed", 0.0))
        run.train_seconds = float(state.get("train_seconds", 0.0))
    run.net = run.model
    if run.world > 1:
        ids = [run.device.index] if run.device.type == "cuda" else None
        run.net = nn.parallel.DistributedDataParallel(run.model, device_ids=ids)
    if run.cfg.trainer.compile:
        run.net = torch.compile(run.net)


def train_steps(run: Run, outputs: RunOutputs) -> None:
    """The step loop: from ``run.step`` to ``run.total``, logging and checkpointing at intervals.

    A stop signal (SIGTERM, SIGINT, SIGUSR1) ends the loop after the step in progress, with a
    checkpoint, by raising :class:`damp.preemption.Preempted`; trainer.checkpoint_minutes adds
    checkpoints by the clock. Neither changes what is trained, so a resume stays bit-identical.
    """
    t = run.cfg.trainer
    tracker = LossTracker(run.device, run.unflushed)
    run.model.train()
    session_start, before = time.perf_counter(), run.train_seconds

    def elapsed() -> float:
        return before + time.perf_counter() - session_start
    flags_device = run.device if torch.distributed.is_initialized() and \
        torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    with stop_signals(t.checkpoint_minutes, flags_device) as stops:
        while run.step < run.total:
            epoch, start_batch = divmod(run.step, run.steps_per_epoch)
            run.bundle.train.set_epoch(epoch)
            for batch_index, (x, y) in enumerate(run.bundle.train.iter_from(start_batch), start_batch):
                x, y = train_batch_transforms(run.cfg.data, run.cfg.seed, x, y, epoch, batch_index,
                                              run.bundle.num_classes, (run.rank, run.world))
                tracker.add(train_step(run, x, y), run.step)
                run.step += 1
                outputs.step_done()
                _after_step(run, outputs, tracker, stops, epoch, elapsed)
                if run.step >= run.total:
                    break
        stops.drain()
        if stops.any_received():  # a signal during the last steps: the final checkpoint is written
            raise stops.stopped(run.step, str(run.out / "last.pt"))


def _after_step(run: Run, outputs: RunOutputs, tracker: LossTracker, stops: StopSignals, epoch: int,
                elapsed: Callable[[], float]) -> None:
    """Log, validate and checkpoint as the intervals, the clock and the signals ask."""
    t = run.cfg.trainer
    decision = stops.poll()
    at_log = run.step % t.log_every == 0 or run.step == run.total
    at_interval = run.step % t.checkpoint_every == 0 or run.step == run.total
    if at_log or at_interval:  # the only host syncs: once per interval
        run.running["loss_sum"] += tracker.flush(run)
    if at_log:
        outputs.log(_metrics_row(run, epoch))
    if _at_validation(run):  # before the checkpoint, so a resume never skips a validation row
        outputs.validation(validate(run))
    if at_interval or decision.checkpoint:
        # Between flushes the device's partial loss sum is saved as it is (flushing it here would
        # round the logged loss differently from an uninterrupted run).
        run.unflushed = 0.0 if at_interval else tracker.peek(run)
        run.train_seconds = elapsed()  # read after the interval's host sync, so not ahead of the device
        outputs.checkpoint(lambda: checkpoint_payload(run))
        stops.checkpointed()
    if decision.stop and run.step < run.total:
        raise stops.stopped(run.step, str(run.out / "last.pt"))


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimizer step on batch (x, y); returns the detached loss (no host sync)."""
    t, o = run.cfg.trainer, run.cfg.optim
    if t.precision == "fp64":
        x = x.double()
    if t.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    run.optimizer.zero_grad(set_to_none=True)
    loss_fn = jsd_loss if run.cfg.data.augmix_jsd else F.cross_entropy
    loss = run.method.backward(run.net, x, y, loss_fn, scaler=run.scaler,
                               autocast_dtype=autocast_dtype(t.precision))
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    if o.clip_norm > 0:
        nn.utils.clip_grad_norm_(run.model.parameters(), o.clip_norm)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    return loss


def _at_validation(run: Run) -> bool:
    """Whether an epoch that eval.every_epochs asks to validate ends at this step."""
    every = run.cfg.eval.every_epochs
    return every > 0 and run.step % run.steps_per_epoch == 0 and (run.step // run.steps_per_epoch) % every == 0


def validate(run: Run) -> dict:
    """Error and NLL on the hold-out split (the test set without one), with the clean weights.

    Rank 0 evaluates while the others wait; eval mode draws no random numbers, so exact resume holds.
    """
    row = {"step": run.step, "epoch": run.step // run.steps_per_epoch}
    if is_main():
        dtype = next(run.model.parameters()).dtype  # float64 under trainer.precision=fp64
        batches = ((x.to(dtype), y) for x, y in (run.bundle.holdout or run.bundle.test))
        metrics = stream_metrics(run.model, batches)
        row.update(val_error=metrics["error"], val_nll=metrics["nll"])
    barrier()
    return row


def _metrics_row(run: Run, epoch: int) -> dict:
    """The metrics row at a log step; the loss is the mean over the steps since the last row."""
    log_every = run.cfg.trainer.log_every
    steps_in_interval = run.step - (run.step - 1) // log_every * log_every
    row = {"step": run.step, "epoch": epoch, "loss": run.running["loss_sum"] / steps_in_interval,
           "lr": run.optimizer.param_groups[0]["lr"]}
    run.running["loss_sum"] = 0.0
    return row


def checkpoint_payload(run: Run) -> dict:
    """Everything an exact resume needs (gathers every rank's RNG state: call on every rank)."""
    return {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict() if run.scaler else {},
            "method": run.method.state_dict(), "rng": all_gather_objects(torch.get_rng_state()),
            "cuda_rng": all_gather_objects(torch.cuda.get_rng_state(run.device))
            if run.device.type == "cuda" else [],
            "step": run.step, "epoch": run.step // run.steps_per_epoch, "running": run.running,
            "train_seconds": run.train_seconds, "unflushed": run.unflushed,
            "config": to_dict(run.cfg), "damp_version": __version__}


def evaluate_and_write(run: Run) -> dict:
    """Evaluate the clean weights (rank 0) and write results.json; returns the results ({} elsewhere)."""
    if not is_main():
        return {}
    # Evaluation runs in float32 whatever the training precision.
    results = evaluate(run.model.float(), run.bundle, run.cfg)
    if run.bundle.holdout is not None:  # the tuning split, next to the test metrics (paper §4: 10 % hold-out)
        results["holdout"] = stream_metrics(run.model, run.bundle.holdout)
    held_names = resolve_corruptions(run.cfg.eval.holdout_corruptions)
    if held_names and run.bundle.holdout is not None:  # numbers to tune on that never touch the test set
        held = run.bundle.holdout
        corrupted, _ = corruption_results(run.model, replace(run.bundle, test_arrays=(held.images, held.labels)),
                                          run.cfg, held_names, run.cfg.eval.severities, seed=run.cfg.eval.seed)
        results["holdout_corruptions"] = aggregate(corrupted, run.cfg.data.name, "hendrycks")
    if run.cfg.eval.train_metrics:  # the fit: train error next to hold-out and test error
        results["train"] = stream_metrics(run.model, run.bundle.train_plain)
    results["meta"].update({"run": str(run.out), "method": run.cfg.method.name, "steps": run.step,
                            "world_size": run.world, "train_seconds": round(run.train_seconds, 2),
                            "damp_version": __version__,
                            "skipped_images": run.bundle.skipped_images})
    write_text(run.out / "results.json", json.dumps(results, indent=2))
    return results


def build_method(cfg: RunConfig, world_size: int) -> methods.Method:
    """The method of ``cfg``; M counts the sub-batches of the global batch, each process holds M / world."""
    name, kwargs = method_arguments(cfg)
    if name != "sgd" and cfg.method.num_perturbations % world_size:
        raise ValueError(f"method.num_perturbations: {cfg.method.num_perturbations} is not divisible by the "
                         f"{world_size} processes")
    return methods.build(name, **kwargs)
