"""``python -m damp``: the `damp` command."""

from damp.cli import run

run()
