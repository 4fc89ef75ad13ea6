"""Checkpoints: one dict of tensors and primitives, written atomically, loaded with weights_only=True.

``last.pt`` is the newest checkpoint; before it is replaced, the previous one moves to
``previous.pt``. A write goes to ``last.pt.tmp``, is fsynced, then renamed, so a kill at any moment
leaves a loadable ``last.pt`` (or, between the two renames, a loadable ``previous.pt``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT_VERSION = 1
LAST, PREVIOUS = "last.pt", "previous.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, foreign or incompatible; the message names the file."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: str | Path, state: dict) -> Path:
    """Atomically write ``state`` as ``directory/last.pt``, keeping the old one as ``previous.pt``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    last, tmp = directory / LAST, directory / (LAST + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({**state, "format_version": FORMAT_VERSION}, f)
        f.flush()
        os.fsync(f.fileno())
    if last.exists():
        os.replace(last, directory / PREVIOUS)
    os.replace(tmp, last)
    _fsync_dir(directory)
    return last


def load_checkpoint(path: str | Path) -> dict:
    """Load a damp checkpoint safely (weights_only) or raise CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any parse failure (KeyError, UnpicklingError, ...) means "not ours"
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable damp checkpoint (truncated or foreign file: {reason})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION or "model" not in state:
        raise CheckpointError(f"{path}: not a damp checkpoint (format version {FORMAT_VERSION} expected)")
    return state


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run: ``last.pt``, else ``previous.pt`` (a kill between renames)."""
    run_dir = Path(run_dir)
    for name in (LAST, PREVIOUS):
        if (run_dir / name).is_file():
            return run_dir / name
    return None
