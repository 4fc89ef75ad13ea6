"""The trainer: ``train(cfg, out_dir)`` runs one experiment from a RunConfig, on one CPU or many GPUs.

Straight-line code, no callbacks. The step keeps nanoGPT's order: zero_grad -> method.backward ->
(unscale, clip) -> step -> schedule. Exact resume: every random draw is a function of the seed and
the step (data order, augmentation, DAMP/DAAP noise) or is checkpointed (the global RNG that dropout
uses, per rank), and the metrics log holds no wall-clock values, so a run killed at any step and
resumed ends bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from damp import __version__, methods
from damp import seeding
from damp.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint
from damp.config import RunConfig, dump_config, to_dict
from damp.data.augment import corrupt_half, mixup_fixed
from damp.data.build import build_data
from damp.evaluate import check_evaluation_inputs
from damp.dist import all_gather_objects, barrier, init_from_env, is_main, teardown, unwrap
from damp.log import progress_bar
from damp.models import build_model
from damp.optim import build_optimizer, build_scheduler

# Sections that must match for --resume: a checkpoint of another model or dataset is refused.
RESUME_MUST_MATCH = ("data", "model", "seed")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the message names the step, loss, lr and method."""


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("trainer.device: cuda requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def model_for(cfg: RunConfig, bundle) -> nn.Module:
    """The model of ``cfg`` for the data in ``bundle`` (classes, channels, size, normalisation)."""
    extra = {"width": cfg.model.width} if cfg.model.name == "small_cnn" and cfg.model.width else {}
    return build_model(cfg.model.name, num_classes=bundle.num_classes, in_channels=bundle.in_channels,
                       image_size=bundle.image_size, dropout=cfg.model.dropout, mean=bundle.mean, std=bundle.std,
                       **extra)


def build_method(cfg: RunConfig, world_size: int) -> methods.Method:
    """The method of ``cfg``; M counts the sub-batches of the global batch, each process holds M / world."""
    m = cfg.method
    name = "sgd" if m.name == "dropout" else m.name
    if name == "sgd":
        return methods.SGD()
    if m.num_perturbations % world_size:
        raise ValueError(f"method.num_perturbations: {m.num_perturbations} is not divisible by the "
                         f"{world_size} processes")
    hp = {"num_perturbations": m.num_perturbations, "executor": m.executor, "batchnorm": m.batchnorm}
    if name in ("damp", "daap"):
        hp.update(std=m.std, seed=cfg.seed)
    else:
        hp.update(rho=m.rho)
        if name == "asam" and m.eta is not None:
            hp["eta"] = m.eta
    return methods.build(name, **hp)


def prepare_run_dir(out: Path, cfg: RunConfig, resume: bool, overwrite: bool) -> dict | None:
    """Check the output directory; on resume load and check the checkpoint. Returns it (or None)."""
    if resume:
        path = find_checkpoint(out)
        if path is None:
            saved = out / "config.yaml"
            if saved.is_file() and yaml.safe_load(saved.read_text()) == to_dict(cfg):
                return None  # killed before its first checkpoint: the same run starts from step 0
            raise FileNotFoundError(f"{out}: no checkpoint to resume from (last.pt / previous.pt)")
        state = load_checkpoint(path)
        saved = state.get("config", {})
        for key in RESUME_MUST_MATCH:
            if saved.get(key) != to_dict(cfg).get(key):
                raise CheckpointError(f"{path}: checkpoint was trained with a different {key!r} config; "
                                      "resume with the same data/model/seed")
        return state
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass --resume to continue or --overwrite to start over")
    return None


class MetricsLog:
    """Deterministic per-interval metrics (step, epoch, loss, lr) as JSONL or CSV; truncated on resume."""

    FIELDS = ("step", "epoch", "loss", "lr")

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
            csv.writer(f).writerow([row[k] for k in self.FIELDS])
        else:
            f.write(json.dumps({k: row[k] for k in self.FIELDS}) + "\n")

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            self._write(f, row)


def train(cfg: RunConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Train and evaluate one run; writes config.yaml, metrics, checkpoints and results.json to ``out``.

    Returns the results dict (rank 0; other ranks return {}).
    """
    t, o = cfg.trainer, cfg.optim
    out = Path(out)
    check_evaluation_inputs(cfg)  # fail before anything is written or trained
    rank, world, local_rank = init_from_env("cuda" if t.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        device = resolve_device(t.device, local_rank)
        state = prepare_run_dir(out, cfg, resume, overwrite) if is_main() else None
        barrier()
        if not is_main() and resume and find_checkpoint(out) is not None:
            state = load_checkpoint(find_checkpoint(out))
        if is_main():
            out.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, out / "config.yaml")
        vit = cfg.model.name.startswith("vit")
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        bundle = build_data(cfg, rank=rank, world_size=world, device=device, vit=vit)
        model = model_for(cfg, bundle).to(device)
        if t.precision == "fp64":  # float64 end to end, for reference checks (e.g. 1 vs N processes)
            model = model.double()
        if t.channels_last:
            model = model.to(memory_format=torch.channels_last)
        torch.manual_seed(seeding.derive_seed(cfg.seed, seeding.DROPOUT, rank))  # dropout: per-rank stream
        method = build_method(cfg, world)
        optimizer = build_optimizer(o, model)
        steps_per_epoch = len(bundle.train)
        total = t.max_steps or t.epochs * steps_per_epoch
        scheduler = build_scheduler(o, optimizer, total, steps_per_epoch)
        scaler = torch.amp.GradScaler(device.type) if t.precision == "fp16" else None
        autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
        step, running = 0, {"loss_sum": 0.0}
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if state["method"]:
                method.load_state_dict(state["method"])
            rng = state["rng"]
            torch.set_rng_state(rng[rank] if rank < len(rng) else rng[0])
            cuda_rng = state.get("cuda_rng") or []
            if device.type == "cuda" and rank < len(cuda_rng):
                torch.cuda.set_rng_state(cuda_rng[rank], device)
            step, running = int(state["step"]), dict(state["running"])
        net = model
        if world > 1:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
        if t.compile:
            net = torch.compile(net)
        loss_fn = F.cross_entropy
        metrics = MetricsLog(out / f"metrics.{t.metrics_format}", t.metrics_format, step if state else None) \
            if is_main() else None
        timing = open(out / "timing.jsonl", "a") if is_main() else None
        writer = _tensorboard(out) if t.tensorboard and is_main() else None

        def checkpoint() -> None:
            payload = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else {},
                       "method": method.state_dict(), "rng": all_gather_objects(torch.get_rng_state()),
                       "cuda_rng": all_gather_objects(torch.cuda.get_rng_state(device))
                       if device.type == "cuda" else [],
                       "step": step, "epoch": step // steps_per_epoch, "running": running,
                       "config": to_dict(cfg), "damp_version": __version__}
            if is_main():
                save_checkpoint(out, payload)
            barrier()

        first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite step, on device
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        model.train()
        bar = progress_bar(total, f"train {cfg.method.name}", t.progress and is_main())
        bar.update(step)
        tick, tick_step = time.perf_counter(), step
        with bar:
            while step < total:
                epoch, start_batch = divmod(step, steps_per_epoch)
                bundle.train.set_epoch(epoch)
                for batch_index, (x, y) in enumerate(bundle.train.iter_from(start_batch), start_batch):
                    x, y = _batch_transforms(cfg, x, y, epoch, batch_index, bundle.num_classes)
                    if t.precision == "fp64":
                        x = x.double()
                    if t.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    optimizer.zero_grad(set_to_none=True)
                    loss = method.backward(net, x, y, loss_fn, scaler=scaler, autocast_dtype=autocast_dtype)
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    if o.clip_norm > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), o.clip_norm)
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    scheduler.step()
                    bad = ~torch.isfinite(loss)
                    first_bad = torch.where((first_bad < 0) & bad, torch.full_like(first_bad, step + 1), first_bad)
                    loss_sum += loss.double()
                    step += 1
                    bar.update()
                    at_log = step % t.log_every == 0 or step == total
                    at_ckpt = step % t.checkpoint_every == 0 or step == total
                    if at_log or at_ckpt:  # the only host syncs: once per interval
                        _check_finite(first_bad, loss_sum, step, optimizer, method)
                        running["loss_sum"] += float(loss_sum)  # partial interval sum survives a checkpoint
                        loss_sum.zero_()
                    if at_log:
                        steps_in_interval = step - (step - 1) // t.log_every * t.log_every
                        row = {"step": step, "epoch": epoch, "loss": running["loss_sum"] / steps_in_interval,
                               "lr": optimizer.param_groups[0]["lr"]}
                        running["loss_sum"] = 0.0
                        if metrics is not None:
                            metrics.append(row)
                            now = time.perf_counter()
                            rate = (step - tick_step) * cfg.data.batch_size / max(now - tick, 1e-9)
                            timing.write(json.dumps({"step": step, "images_per_s": rate}) + "\n")
                            timing.flush()
                            tick, tick_step = now, step
                            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.3g}", img_s=f"{rate:.0f}")
                            if writer is not None:
                                writer.add_scalar("train/loss", row["loss"], step)
                                writer.add_scalar("train/lr", row["lr"], step)
                    if at_ckpt:
                        checkpoint()
                    if step >= total:
                        break
        if timing is not None:
            timing.close()
        if writer is not None:
            writer.close()
        results = {}
        if is_main():
            from damp.evaluate import evaluate_run

            # Evaluation runs in float32 whatever the training precision.
            results = evaluate_run(unwrap(model).float(), bundle, cfg)
            results["meta"].update({"run": str(out), "method": cfg.method.name, "steps": step,
                                    "world_size": world, "damp_version": __version__,
                                    "skipped_images": bundle.skipped_images})
            (out / "results.json").write_text(json.dumps(results, indent=2))
        barrier()
        return results
    finally:
        teardown()


def _batch_transforms(cfg: RunConfig, x: torch.Tensor, y: torch.Tensor, epoch: int, batch: int,
                      num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train-on-a-corruption (Algorithm 2) and fixed MixUp, seeded from (seed, epoch, batch)."""
    d = cfg.data
    if d.train_corruption is not None:
        seed = seeding.derive_seed(cfg.seed, seeding.TRAIN_CORRUPTION, epoch, batch)
        gen = torch.Generator(device=x.device).manual_seed(seed)
        # Severity 0: one severity 1-5 per batch, derived on the host (no device sync in the step loop).
        severity = d.train_corruption_severity or 1 + seed % 5
        x = corrupt_half(x, d.train_corruption, severity, gen, d.frost_dir)
    if d.mixup > 0:
        x, y = mixup_fixed(x, y, num_classes, d.mixup)
    return x, y


def _check_finite(first_bad: torch.Tensor, loss_sum: torch.Tensor, step: int, optimizer, method) -> None:
    bad_step = int(first_bad)
    if torch.distributed.is_initialized():  # every rank stops together, or the healthy ones would hang
        flag = torch.tensor([bad_step], device=first_bad.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        bad_step = int(flag)
    if bad_step >= 0:
        raise NonFiniteLossError(
            f"non-finite loss ({float(loss_sum)}) at step {bad_step} (lr {optimizer.param_groups[0]['lr']:.4g}, "
            f"method {method!r}); the last good checkpoint is kept: fix the cause (e.g. --set method.std=...) "
            "and run again with --resume")


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
