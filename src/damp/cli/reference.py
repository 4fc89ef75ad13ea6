"""docs/cli.md: every command's ``--help``, generated from the parser so the reference cannot drift.

    python -m damp.cli.reference > docs/cli.md
"""

from __future__ import annotations

import argparse
import functools

from damp.cli.parser import build_parser

WIDTH = 100  # a fixed width, so the page does not depend on the terminal that wrote it


def _help(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = functools.partial(parser.formatter_class, width=WIDTH)
    return parser.format_help().rstrip()


def cli_reference() -> str:
    """The Markdown page: `damp --help`, then one section per command with its ``--help``."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    lines = ["# Command-line reference", "",
             "Every command's `--help`, generated from the parser by `python -m damp.cli.reference > docs/cli.md`",
             "(`tests/cli/test_reference.py` fails when this page and the code differ). How the commands fit",
             "together, and what a run writes: the [README](../README.md) (\"Training runs\"); which",
             "file does what: [architecture.md](architecture.md).",
             "", "```", _help(parser), "```", ""]
    for name, command in commands.items():
        lines += [f"## damp {name}", "", "```", _help(command), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(cli_reference(), end="")
