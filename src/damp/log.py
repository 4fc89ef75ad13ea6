"""Console output helpers: the only places besides the cli package that write to the terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr (disabled when ``enabled`` is False or stderr is not wanted)."""
    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False, dynamic_ncols=True)
