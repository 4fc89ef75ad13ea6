"""The `damp` command line. The only code that prints; everything else is a library call.

``parser`` builds the arguments; ``run_commands`` and ``eval_commands`` turn them into library calls;
``main`` turns the library's expected failures into one stderr line and an exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from damp.cli.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), run the command, return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    # The library's warnings (e.g. a resume that falls back to previous.pt) as one line each.
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setFormatter(logging.Formatter(f"damp {args.command}: warning: %(message)s"))
    logger = logging.getLogger("damp")
    logger.addHandler(warnings)
    try:
        return _run_command(args, argv)
    finally:
        logger.removeHandler(warnings)


def _run_command(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``args.func(args)``, with every expected failure as one stderr line and its exit code."""
    from damp.locks import DirectoryInUse
    from damp.preemption import EXIT_PREEMPTED, Preempted
    from damp.sweep import BudgetReached

    try:
        return args.func(args)
    except (Preempted, BudgetReached) as stop:  # a checkpoint, or a sweep between runs: both resume
        again = sys.argv[1:] if argv is None else list(argv)
        again = again if "--resume" in again else [*again, "--resume"]
        print(f"damp {args.command}: {stop}; resume with: damp {shlex.join(again)}", file=sys.stderr)
        return EXIT_PREEMPTED
    except DirectoryInUse as err:
        print(f"damp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError, OSError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"damp {args.command}: error: {message}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        from damp.loss_tracker import NonFiniteLossError

        if not isinstance(err, NonFiniteLossError):
            raise
        print(f"damp {args.command}: error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"damp {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun, skip interpreter finalisation: gloo's native threads can abort the process
        # ("terminate called without an active exception") after a run that finished and saved
        # everything, which torchrun would report as a failure. Nothing is left to flush but stdio.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)

