"""Checkpoints and the run's other files, written atomically; checkpoints load with weights_only=True.

``last.pt`` is the newest checkpoint; before it is replaced, the previous one moves to
``previous.pt``. A write goes to ``last.pt.tmp``, is fsynced, then renamed, so a kill at any moment
leaves a loadable ``last.pt`` (or, between the two renames, a loadable ``previous.pt``). A write
that fails (disk full, permissions) raises an OSError naming the file and leaves both as they were.
On resume, an unreadable ``last.pt`` falls back to ``previous.pt`` (:func:`load_newest`).
"""

from __future__ import annotations

import contextlib
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


def _write_atomically(path: Path, write) -> None:
    """``write(file)`` into ``path.tmp``, fsync, rename over ``path``; an OSError names ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if path.name == LAST and path.exists():
            os.replace(path, path.with_name(PREVIOUS))
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from None
    _fsync_dir(path.parent)


def save_checkpoint(directory: str | Path, state: dict) -> Path:
    """Atomically write ``state`` as ``directory/last.pt``, keeping the old one as ``previous.pt``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    last = directory / LAST
    _write_atomically(last, lambda f: torch.save({**state, "format_version": FORMAT_VERSION}, f))
    return last


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half a results.json)."""
    _write_atomically(Path(path), lambda f: f.write(text.encode()))


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


def load_newest(run_dir: str | Path) -> tuple[dict, Path, list[str]] | None:
    """The newest readable checkpoint of a run: (state, its path, why newer ones were skipped).

    None if the run has no checkpoint; CheckpointError (naming both files) if none is readable.
    """
    run_dir = Path(run_dir)
    problems = []
    for name in (LAST, PREVIOUS):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            return load_checkpoint(path), path, problems
        except CheckpointError as err:
            problems.append(str(err))
    if problems:
        raise CheckpointError("no readable checkpoint: " + "; ".join(problems))
    return None
