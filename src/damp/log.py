"""Console output helpers: the only places besides the cli package that write to the terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm

BAR_DELAY_S = 0.5  # seconds before a bar is drawn


def progress_bar(total: int | None, desc: str, enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr (disabled when ``enabled`` is False or stderr is not wanted).

    It appears only after BAR_DELAY_S, so a command that fails fast on bad input prints its one error
    line alone.
    """
    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False, dynamic_ncols=True,
                delay=BAR_DELAY_S)
