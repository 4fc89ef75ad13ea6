"""The `damp` command line. The only module that prints; everything else is a library call."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from damp import __version__


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _severities(text: str) -> list[int]:
    try:
        values = [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"severities must be integers 1-5, got {text!r}") from None
    if not values or any(not 1 <= v <= 5 for v in values):
        raise argparse.ArgumentTypeError(f"severities must be integers 1-5, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    from damp.demo import DEMO_METHODS, DemoSettings, results_table, run_demo

    methods = _csv(args.methods) if args.methods != "all" else list(DEMO_METHODS)
    settings = DemoSettings(methods=methods, epochs=args.epochs, seed=args.seed,
                            corruptions=_csv(args.corruptions) if args.corruptions != "all" else (),
                            severities=args.severities)
    results = run_demo(Path(args.out), settings, progress=not args.quiet)
    print(results_table(results))
    print(f"\nwrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="damp", description="DAMP and corruption-robustness tools for PyTorch.")
    parser.add_argument("--version", action="version", version=f"damp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="train baselines and DAMP on the embedded digits data and compare "
                                       "their corruption robustness (CPU, a few minutes)")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--methods", default="all",
                      help="comma-separated: sgd,dropout,damp,daap,sam,asam, or 'all' (default)")
    demo.add_argument("--epochs", type=_positive_int, default=30, help="training epochs per method (default: 30)")
    demo.add_argument("--seed", type=int, default=0, help="seed of weights, data order and noise (default: 0)")
    demo.add_argument("--corruptions", default="all", help="comma-separated corruption names, or 'all' (default)")
    demo.add_argument("--severities", type=_severities, default=[1, 2, 3, 4, 5],
                      help="comma-separated severities 1-5 (default: all)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        print(f"damp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"damp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
