"""torch.distributed glue for torchrun: init from the environment, rank helpers, gathers, teardown."""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

# A collective that waits longer than this fails instead of hanging (a dead peer, say), so every
# rank exits within a bounded time. torchrun's agent also tears the group down when a worker dies.
DEFAULT_TIMEOUT_S = 300


def init_from_env(device_type: str) -> tuple[int, int, int]:
    """(rank, world_size, local_rank). Initialises a process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=int(os.environ.get("DAMP_DDP_TIMEOUT", DEFAULT_TIMEOUT_S)))
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timeout)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj):
    """Every rank's ``obj`` as a list (a one-element list without DDP)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and torch.compile wrappers (so keys carry no `module.`/`_orig_mod.`)."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
