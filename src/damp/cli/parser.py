"""The `damp` argument parser: its value types and one sub-parser per command."""

from __future__ import annotations

import argparse

from damp import __version__
from damp.cli.common import split_csv
from damp.cli.eval_commands import cmd_bench, cmd_evaluate, cmd_probe
from damp.cli.run_commands import cmd_corrupt, cmd_demo, cmd_report, cmd_sweep, cmd_train


ALL_SEVERITIES = "all"  # the parser's default: argparse passes it through _severities, like a typed value


def _severities(text: str) -> list[int]:
    from damp.corruptions import SEVERITIES  # imported on use: --help stays free of torch

    if text == ALL_SEVERITIES:
        return list(SEVERITIES)
    allowed = f"integers {SEVERITIES[0]}-{SEVERITIES[-1]}"
    try:
        values = [int(t) for t in split_csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"severities must be {allowed}, got {text!r}") from None
    if not values or any(v not in SEVERITIES for v in values):
        raise argparse.ArgumentTypeError(f"severities must be {allowed}, got {text!r}")
    return values


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (1: positive, 0: non-negative)."""
    kind = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}")
        return value
    return parse


_positive_int, _count = _int_at_least(1), _int_at_least(0)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors as one stderr line (the usage is one --help away), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="train baselines and DAMP on the embedded digits data and compare "
                                       "their corruption robustness (CPU, about 2 minutes)")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--methods", default="all",
                      help="comma-separated methods with a digits preset (configs/digits_small_cnn), or "
                           "'all' (default: the paper's six, sgd,dropout,damp,daap,sam,asam; rwp and mrwp carry "
                           "Li et al.'s CIFAR values, not tuned on digits)")
    demo.add_argument("--epochs", type=_positive_int, default=20, help="training epochs per method (default: 20)")
    demo.add_argument("--seed", type=int, help="seed of weights, data order and noise (default: 2, a seed none of "
                      "the paper's six digits presets was tuned on)")
    demo.add_argument("--corruptions", default="all", help="comma-separated corruption names, or 'all' (default)")
    demo.add_argument("--severities", type=_severities, default=ALL_SEVERITIES,
                      help="comma-separated severities 1-5 (default: all)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)


def _add_train(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train one run from a YAML config (torchrun for several processes)")
    tr.add_argument("--config", help="YAML preset (see configs/); without one, the defaults (digits, small_cnn)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config key, e.g. --set trainer.epochs=3 (repeatable)")
    tr.add_argument("--out", required=True, help="run directory (config.yaml, metrics, checkpoints, results.json)")
    tr.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="start over in a non-empty run directory")
    tr.set_defaults(func=cmd_train)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="a grid of runs x seeds, resumable; selects each method's best grid point "
                                      "on the hold-out split")
    sw.add_argument("--config", help="YAML preset every run starts from")
    sw.add_argument("--grid", action="append", metavar="KEY=V1,V2,...",
                    help="a grid axis, e.g. --grid method.std=0.1,0.2 (repeatable: the grid is their product; "
                         "none: one point, the config itself)")
    sw.add_argument("--seeds", type=_positive_int, default=1, help="seeds 0..N-1 per grid point (default: 1)")
    sw.add_argument("--final-seeds", type=_count, default=0, metavar="N",
                    help="then run each method's selected point up to N seeds (the paper: tune, then report "
                         "several seeds); default: no extra seeds")
    sw.add_argument("--fresh-seeds", type=_count, default=0, metavar="N",
                    help="instead: run each method's selected point with N new seeds (after the tuning seeds) and "
                         "report only those (docs/evidence.md)")
    sw.add_argument("--extend-edges", type=_count, default=0, metavar="K",
                    help="a selection at the edge of a one-axis numeric grid adds the next value one step further, "
                         "up to K times (default: 0)")
    sw.add_argument("--budget-minutes", type=float, default=0, metavar="M",
                    help="start no run after M minutes: stop with exit code 75, continue with --resume (default: "
                         "no budget)")
    sw.add_argument("--tune-set", action="append", metavar="KEY=VALUE",
                    help="override for the tuning runs only (repeatable), e.g. eval.corruptions=none and "
                         "eval.holdout_corruptions=all")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every run (repeatable); "
                    "set data.holdout (e.g. 0.1) so the selection has a hold-out error")
    sw.add_argument("--out", required=True, help="sweep directory: one run directory per run, summary.md/.json")
    sw.add_argument("--resume", action="store_true", help="skip finished runs and resume the unfinished one")
    sw.add_argument("--quiet", action="store_true", help="no sweep progress bar (each run's own bar: "
                    "--set trainer.progress=false)")
    sw.set_defaults(func=cmd_sweep)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="evaluate a trained run, or any model by its factory: clean, corruptions, "
                                         "FGSM, ImageNet variants")
    what = ev.add_mutually_exclusive_group(required=True)
    what.add_argument("target", nargs="?", help="run directory (uses last.pt) or checkpoint file")
    what.add_argument("--model", metavar="MODULE:FACTORY", help="instead of a run: a model damp did not train, "
                      "built as factory(num_classes=..., in_channels=...); takes [0, 1] pixels "
                      "(else --set model.normalize=true)")
    model = ev.add_argument_group("with --model (a model damp did not train)",
                                  "a run directory knows its model and data")
    model.add_argument("--weights", metavar="FILE", help="a state dict, or a checkpoint with a 'model' or "
                       "'state_dict' key (DDP 'module.' and torch.compile '_orig_mod.' prefixes are stripped)")
    model.add_argument("--data", metavar="NAME", help="the dataset to test on (digits, fashion_mnist, cifar10, "
                       "cifar100, tiny_imagenet, imagenet)")
    model.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. "
                       "--set model.kwargs.depth=2 --set model.normalize=true (repeatable)")
    ev.add_argument("--corruptions", help="all, common, extra, none or comma-separated names (default: the run's; "
                    "with --model: all)")
    ev.add_argument("--severities", type=_severities, help="comma-separated 1-5 (default: the run's; with --model: "
                    "1-5)")
    ev.add_argument("--c-dir", help="released -C files: CIFAR-10/100-C .npy folder or Tiny/ImageNet-C folders")
    ev.add_argument("--fgsm", type=float, nargs="*", help="FGSM epsilons in [0, 1] pixel units (ImageNet: 2/224 "
                    "= 0.00893 in the paper); default: the run's (with --model: none)")
    ev.add_argument("--seed", type=int, default=0, help="seed of on-the-fly corruptions (default: 0)")
    ev.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ev.add_argument("--data-root", help="the dataset folder: where a run's dataset lives now (overrides its saved "
                    "data.root), or the --data dataset's folder with --model")
    ev.add_argument("--frost-dir", help="folder with the frost textures")
    variants = ev.add_argument_group("ImageNet variants",
                                     "the ImageNet variants are evaluated for runs trained on ImageNet")
    for key in ("a", "sketch", "drawing", "cartoon", "d", "c-bar"):
        variants.add_argument(f"--imagenet-{key}", metavar="DIR",
                              help=f"ImageNet-{key.upper() if len(key) == 1 else key} folder")
    variants.add_argument("--imagenet-d-map", help="ImageNet-D class -> ImageNet-1k ids (json)")
    ev.add_argument("--mce-baseline", choices=["hendrycks", "robustbench-5k"], default="hendrycks",
                    help="AlexNet errors that normalise the ImageNet-C mCE: Hendrycks & Dietterich's (default, "
                         "full sets) or RobustBench's 5000-image-subset row (key mCE_alexnet_robustbench_5k)")
    ev.add_argument("--out", help="output JSON (default: RUN_DIR/evaluation.json; with --model ./evaluation.json)")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_evaluate, only_with_model=model, not_with_model=variants)


def _add_report(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="compare runs: Markdown table, error-vs-severity curves, heatmaps")
    rep.add_argument("runs", nargs="+", help="run directories (results.json or evaluation.json) and/or `damp sweep` "
                     "directories (each stands for its selected points, reported seeds)")
    rep.add_argument("--out", required=True, help="output directory for report.md (RESULTS.md with --claims) and "
                     "the PNG figures")
    rep.add_argument("--baseline", help="run label the heatmap divides by (default: sgd)")
    rep.add_argument("--claims", action="store_true", help="write RESULTS.md: tables, figures, wall-clock, the "
                     "tuning grid and one paragraph per paper claim with its verdict")
    rep.add_argument("--title", help="the report's title")
    rep.add_argument("--command", dest="regenerate_command",
                     help="the command that regenerates the report, named in RESULTS.md (default: this "
                          "damp report command)")
    rep.add_argument("--regime", help="with --claims and --other-regime: this suite's name in \"The two regimes\" "
                     "(e.g. converged)")
    rep.add_argument("--other-regime", metavar="NAME=DIR",
                     help="with --claims and --regime: another suite's sweep directories (DIR/<arm>/), whose "
                          "finished arms that follow the protocol (fresh seeds) RESULTS.md sets beside this suite's "
                          "verdicts")
    rep.add_argument("--skip-unfinished", action="store_true",
                     help="leave out sweep directories that have not finished (no summary.json) or do not exist yet, "
                          "instead of stopping; RESULTS.md (--claims) or stderr names them")
    rep.add_argument("--bench", action="append", default=[], metavar="JSON",
                     help="with --claims: a `damp bench --out` file whose row for the runs' model, batch and M "
                          "RESULTS.md sets beside the wall-clock, as step-time ratios measured in isolation "
                          "(repeat for several runs of the bench)")
    rep.set_defaults(func=cmd_report)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    be = sub.add_parser("bench", help="measure step-time ratios vs SGD, trainer overhead, corruption and "
                                      "evaluation throughput")
    be.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    be.add_argument("--quick", action="store_true",
                    help="fewer repeats, 32-px corruptions only (~3 min on 2 CPU cores)")
    be.add_argument("--out", required=True, help="output JSON file")
    be.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    be.add_argument("--model", metavar="MODULE:FACTORY", help="instead: the corruption benchmark's throughput "
                    "(images x variants / s) and generation / inference time for this model")
    model = be.add_argument_group("with --model (the benchmark's speed for a model, on random images)",
                                  "the default bench measures fixed setups")
    model.add_argument("--image-size", type=_positive_int, default=32, help="image side (default: 32)")
    model.add_argument("--channels", type=int, choices=[1, 3], default=3, help="1 or 3 (default: 3)")
    model.add_argument("--classes", type=_positive_int, default=10, help="classes (default: 10)")
    model.add_argument("--images", type=_positive_int, default=500, help="images (default: 500)")
    model.add_argument("--corruptions", default="all", help="corruptions (default: all)")
    model.add_argument("--frost-dir", help="folder with the frost textures")
    be.set_defaults(func=cmd_bench, only_with_model=model)


def _add_probe(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("probe", help="Theorem 1's multiplicative perturbation of each corruption: the ratio of "
                                      "corrupted to clean layer inputs of a trained run, next to its sigma")
    pr.add_argument("run", help="run directory (or checkpoint file)")
    pr.add_argument("--corruptions", default="all", help="comma-separated names, or all/common/extra (default: all)")
    pr.add_argument("--severities", type=_severities, default=ALL_SEVERITIES,
                    help="comma-separated 1-5 (default: all)")
    pr.add_argument("--images", type=_positive_int, default=256, help="test images probed (default: 256)")
    pr.add_argument("--out", help="output JSON (default: RUN/probe.json)")
    pr.add_argument("--figure", help="also a figure (PNG): ratio spread by corruption and severity, sigma marked")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    pr.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    pr.add_argument("--data-root", help="dataset folder, if it moved since training")
    pr.add_argument("--frost-dir", help="folder with the frost textures (else the run's data.frost_dir, "
                                        "$DAMP_FROST_DIR or the imagecorruptions package)")
    pr.set_defaults(func=cmd_probe)


def _add_corrupt(sub: argparse._SubParsersAction) -> None:
    cor = sub.add_parser("corrupt", help="materialise a corrupted test set (CIFAR-10-C .npy or -C folder layout)")
    cor.add_argument("--data", required=True,
                     help="digits, fashion_mnist, cifar10, cifar100 (test split) or folder (class sub-folders)")
    cor.add_argument("--root", help="dataset folder (fashion_mnist default: /usr/share/datasets/fashion-mnist)")
    cor.add_argument("--out", required=True, help="output directory (must be empty unless --overwrite)")
    cor.add_argument("--format", choices=["auto", "npy", "folder"], default="auto",
                     help="npy (CIFAR-10-C layout) or folder (JPEG q85); auto: npy for arrays, folder for folders")
    cor.add_argument("--corruptions", default="all", help="comma-separated names, or 'all' (default: all 19)")
    cor.add_argument("--severities", type=_severities, default=ALL_SEVERITIES,
                     help="comma-separated 1-5 (default: all)")
    cor.add_argument("--preset", choices=["cifar", "tiny", "imagenet"],
                     help="constant table (default: from the image size; 28/32 px -> cifar)")
    cor.add_argument("--size", type=_positive_int, default=224, help="--data folder: output size (64 or 224)")
    cor.add_argument("--seed", type=int, default=0, help="corruption seed (default: 0)")
    cor.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    cor.add_argument("--frost-dir", help="folder with frost1.png ... frost6.jpg (else $DAMP_FROST_DIR or the "
                                         "imagecorruptions package data)")
    cor.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    cor.add_argument("--quiet", action="store_true", help="no progress bar")
    cor.set_defaults(func=cmd_corrupt)


def build_parser() -> argparse.ArgumentParser:
    """The `damp` parser: one sub-command per library entry point."""
    parser = OneLineParser(prog="damp", description="DAMP and corruption-robustness tools for PyTorch.")
    parser.add_argument("--version", action="version", version=f"damp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_demo, _add_train, _add_sweep, _add_evaluate, _add_report, _add_bench, _add_probe, _add_corrupt):
        add(sub)
    return parser
