"""``python -m damp.cli`` (what torchrun launches)."""

from damp.cli import run

run()
