"""The run directory before training: a fresh start, --overwrite, or --resume from the newest readable
checkpoint of the same run (the same data, model, method and seed).
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from damp.checkpoint import CheckpointError, load_newest
from damp.config import RunConfig, flat_keys, to_dict
from damp.locks import has_content

# Config keys (and sections) that must match for --resume: a checkpoint of another model, method
# or dataset is refused. The method's hyperparameters may change (e.g. a smaller method.std after a
# non-finite loss).
RESUME_MUST_MATCH = ("data", "model", "method.name", "seed")
# Keys of those sections that do not change the training (paths and evaluation-only settings).
RESUME_MAY_DIFFER = ("data.root", "data.num_workers", "data.eval_batch_size", "data.max_test_images")
LOG = logging.getLogger("damp")


def check_run_dir(out: Path, cfg: RunConfig, resume: bool, overwrite: bool) -> tuple[dict | None, Path | None]:
    """Check the output directory; on resume load and check the newest readable checkpoint.

    Returns it and its path (None, None for a fresh start).
    """
    if resume:
        newest = load_newest(out)
        if newest is None:
            saved = out / "config.yaml"
            if saved.is_file() and yaml.safe_load(saved.read_text()) == to_dict(cfg):
                return None, None  # killed before its first checkpoint: the same run starts from step 0
            raise FileNotFoundError(f"{out}: no checkpoint to resume from (last.pt / previous.pt)")
        state, path, skipped = newest
        if skipped:
            LOG.warning("%s; resuming from %s (step %s)", skipped[0], path.name, state.get("step"))
        difference = first_difference(state.get("config", {}), to_dict(cfg), RESUME_MUST_MATCH)
        if difference is not None:
            raise CheckpointError(f"{path}: the checkpoint is of another run ({difference}); resume with the same "
                                  "data, model, method and seed, or start a new --out")
        return state, path
    if has_content(out) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass --resume to continue or --overwrite to start over")
    return None, None


def first_difference(saved: dict, current: dict, keys: tuple[str, ...]) -> str | None:
    """The first config key under ``keys`` whose value differs, as "key: X in the checkpoint, Y here"."""
    old, new = flat_keys(saved), flat_keys(current)
    for key in sorted(old.keys() | new.keys()):
        checked = any(key == k or key.startswith(k + ".") for k in keys)
        if checked and key not in RESUME_MAY_DIFFER and old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} in the checkpoint, {new.get(key)!r} here"
    return None
