"""One writer per output directory: an exclusive ``fcntl.flock`` on ``DIR/.damp.lock``.

The kernel drops a flock when its holder dies, so a lock left by a killed process is free and is
taken over. The lock file holds the holder's PID, for the refusal message, and is removed on
release; a process that locked a file someone else removed meanwhile tries again on the new one.
A directory that the lock alone created is removed with it, so a refused or failed start leaves the
file system as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".damp.lock"


class DirectoryInUse(RuntimeError):
    """Another live process holds the directory's lock."""


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _acquire(path: Path) -> int:
    """An open descriptor holding the lock on ``path`` (the file that is at ``path`` now)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DirectoryInUse(f"{path.parent}: in use by another damp process (PID {_holder(path)}); wait "
                                     "for it to finish or choose another output directory") from None
            raise
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the file was removed by its previous holder before we locked it: lock the new one


@contextlib.contextmanager
def exclusive_directory(directory: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``directory``'s lock for the block (creating the directory if needed); DirectoryInUse if held."""
    if not enabled:
        yield
        return
    directory = Path(directory).absolute()
    created = [d for d in (directory, *directory.parents) if not d.exists()]  # leaf first
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    try:
        fd = _acquire(path)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # under the lock: a waiting process retries on a fresh file
        os.close(fd)
        _remove_empty(created)


def _remove_empty(directories: list[Path]) -> None:
    """Remove the directories the lock created, leaf first, as long as they are empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def lock_on_main(directory: str | Path) -> Iterator[None]:
    """:func:`exclusive_directory` taken by rank 0 only.

    With a process group, every rank raises if rank 0 is refused. Without one (a sweep under
    torchrun, before its first run joins the group) rank 0 is read from $RANK, and the other ranks
    fail when their first run's group cannot form.
    """
    import torch.distributed as dist

    from damp.dist import all_gather_objects

    grouped = dist.is_initialized()
    main = dist.get_rank() == 0 if grouped else int(os.environ.get("RANK", "0")) == 0
    with contextlib.ExitStack() as stack:
        refusal = None
        if main:
            try:
                stack.enter_context(exclusive_directory(directory))
            except DirectoryInUse as err:
                refusal = str(err)
        refusal = all_gather_objects(refusal)[0] if grouped else refusal
        if refusal is not None:
            raise DirectoryInUse(refusal)
        yield


def is_lock_file(path: Path) -> bool:
    """Whether ``path`` is a lock file (ignored when a directory is checked for being empty)."""
    return path.name == LOCK_NAME


def has_content(directory: Path) -> bool:
    """Whether ``directory`` exists and holds anything besides its lock file."""
    return directory.is_dir() and any(not is_lock_file(p) for p in directory.iterdir())
