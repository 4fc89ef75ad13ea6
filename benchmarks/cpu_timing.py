"""What the CPU step-timing scripts share: their round, thread and output options, and the JSON they write."""

from __future__ import annotations

import argparse
import json

import torch

from damp.checkpoint import write_text


def timing_parser(description: str, *, rounds: int) -> argparse.ArgumentParser:
    """A parser with --rounds (round-robin rounds), --threads (torch's intra-op threads) and --out (JSON)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the figures as JSON")
    return parser


def parse_and_set_threads(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line and give torch the threads it names, before anything is timed."""
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def ratio_line(label: str, sgd_ms: float, ratios: dict[str, float]) -> str:
    """One printed summary: ``label: SGD 12.3 ms; damp 1.30, sam 2.45, ...``."""
    return f"{label}: SGD {sgd_ms:.1f} ms; " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())


def write_figures(result: dict, out: str | None) -> None:
    """Write ``result`` as indented JSON to ``out`` (atomically), if a path was given."""
    if out:
        write_text(out, json.dumps(result, indent=2))
