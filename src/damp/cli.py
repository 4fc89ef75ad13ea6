"""The `damp` command line. The only module that prints; everything else is a library call."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from damp import __version__


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


ALL_SEVERITIES = "all"  # the parser's default: argparse passes it through _severities, like a typed value


def _severities(text: str) -> list[int]:
    from damp.corruptions import SEVERITIES  # imported on use: --help stays free of torch

    if text == ALL_SEVERITIES:
        return list(SEVERITIES)
    allowed = f"integers {SEVERITIES[0]}-{SEVERITIES[-1]}"
    try:
        values = [int(t) for t in _csv(text)]
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


def _check_device(name: str, what: str) -> None:
    """A one-line error for a device this machine does not have (torch would raise with a traceback)."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{what}: {name!r} is not a device (cpu or cuda)") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{what}: {name!r} is not supported (cpu or cuda)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what}: {name} requested but no CUDA device is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"{what}: {name} requested but only {torch.cuda.device_count()} CUDA devices exist")


def _results_line(results: dict) -> str:
    """One line of headline numbers; parts missing from ``results`` are left out."""
    clean, summary = results.get("clean") or {}, results.get("summary") or {}
    parts = [f"clean error {clean['error']:.2f}%" if "error" in clean else "clean error missing"]
    parts += [f"nll {clean['nll']:.3f}"] if "nll" in clean else []
    parts += [f"ece {clean['ece']:.2f}%"] if "ece" in clean else []
    if "mean_corruption_error" in summary:
        parts.append(f"mean corruption error {summary['mean_corruption_error']:.2f}%")
    parts += [f"{key} {summary[key]:.2f}%" for key in ("mean_error_15x5", "mCE_alexnet", "mCE_alexnet_robustbench_5k")
              if key in summary]
    parts += [f"FGSM({row['eps']:.4g}) {row['error']:.2f}%" for row in results.get("fgsm") or []
              if "eps" in row and "error" in row]
    return "  ".join(parts)


def cmd_demo(args: argparse.Namespace) -> int:
    from damp.demo import DEMO_METHODS, DemoSettings, results_table, run_demo

    methods = _csv(args.methods) if args.methods != "all" else list(DEMO_METHODS)
    settings = DemoSettings(methods=methods, epochs=args.epochs, seed=args.seed,
                            corruptions=_csv(args.corruptions) if args.corruptions != "all" else (),
                            severities=args.severities)
    results = run_demo(Path(args.out), settings, progress=not args.quiet)
    print(results_table(results))
    missing = next(iter(results["runs"].values())).get("meta", {}).get("unavailable_corruptions", {})
    for name, reason in missing.items():
        print(f"note: {name} not evaluated: {reason}")
    print(f"\nwrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.md'}")
    return 0


def _refuse_existing(out: Path, overwrite: bool) -> None:
    """The one rule for every output a command writes: never replace a file or a non-empty folder
    unless --overwrite says so."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another --out")


def _write_output(out: Path, text: str) -> None:
    """Write a command's JSON output atomically; an OSError names the file."""
    from damp.checkpoint import write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, text)


def cmd_corrupt(args: argparse.Namespace) -> int:
    from damp import corruptions
    from damp.corruptions.dataset import write_array_c, write_folder_c
    from damp.data import load_array_dataset
    from damp.data.folders import load_folder_images
    from damp.log import progress_bar

    _check_device(args.device, "--device")
    names = corruptions.names() if args.corruptions == "all" else _csv(args.corruptions)
    for name in names:
        corruptions.get(name)
    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    if args.data == "folder":
        if not args.root:
            raise ValueError("--data folder needs --root (a folder of class sub-folders)")
        images, labels, relative, classes = load_folder_images(args.root, args.size)
        fmt = "folder" if args.format == "auto" else args.format
    else:
        dataset = load_array_dataset(args.data, args.root)
        images, labels = dataset.test_images, dataset.test_labels
        relative, classes = [f"{i:06d}.jpg" for i in range(len(labels))], [str(c) for c in range(dataset.num_classes)]
        fmt = "npy" if args.format == "auto" else args.format
    bar = progress_bar(len(names) * len(args.severities), f"corrupt {len(images)} images", not args.quiet)
    writer = write_array_c if fmt == "npy" else write_folder_c
    extra = {} if fmt == "npy" else {"relative_paths": relative, "classes": classes}
    with bar:
        writer(out, images, labels, names=names, severities=args.severities, seed=args.seed, device=args.device,
               preset=args.preset, frost_dir=args.frost_dir, progress=lambda *_: bar.update(), **extra)
    print(f"wrote {len(names)} corruptions x {len(args.severities)} severities of {len(images)} images to {out} "
          f"({'CIFAR-10-C .npy layout' if fmt == 'npy' else '<corruption>/<severity>/<class>/ JPEG q85'})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from damp.config import load_config
    from damp.evaluate import check_evaluation_inputs

    cfg = load_config(args.config, args.set or [])
    if cfg.trainer.device != "auto":
        _check_device(cfg.trainer.device, "trainer.device")
    check_evaluation_inputs(cfg)  # before anything is written: a missing piece would only show after training
    from damp.train import train

    results = train(cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite)
    if results:
        print(_results_line(results))
        print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from damp.dist import is_main
    from damp.locks import lock_on_main
    from damp.log import progress_bar
    from damp.sweep import count_runs, parse_grid, run_sweep

    grid = parse_grid(args.grid or [])
    total = count_runs(args.config, grid, args.seeds, args.final_seeds, args.set or [], args.fresh_seeds)
    with lock_on_main(args.out):  # before the bar is drawn: a refusal is one line
        bar = progress_bar(total, "sweep", not args.quiet and is_main())

        def finished(run, results) -> None:
            bar.update()
            if is_main():
                bar.write(f"{run.name}: {_results_line(results)}")

        with bar:
            summary = run_sweep(args.config, grid, args.seeds, args.out, sets=args.set or [], resume=args.resume,
                                final_seeds=args.final_seeds, fresh_seeds=args.fresh_seeds,
                                extend_edges=args.extend_edges, tune_sets=args.tune_set or [],
                                budget_minutes=args.budget_minutes, on_run=finished, lock=False)
    if is_main():
        for method, chosen in summary["selection"].items():
            print(f"selected for {method}: {chosen['label']} (hold-out error {chosen['holdout_error']:.2f}%)")
        print(f"wrote {Path(args.out) / 'summary.md'} and {Path(args.out) / 'summary.json'}")
    return 0


def _given(group: argparse._ArgumentGroup | None, args: argparse.Namespace) -> list[str]:
    """The flags of an argument group given on the command line (a value other than its default)."""
    actions = group._group_actions if group is not None else []
    return [a.option_strings[0] for a in actions if getattr(args, a.dest) != a.default]


def _check_mode(args: argparse.Namespace) -> None:
    """One line for a flag outside its mode: the parser's "with --model" group without --model, or
    its "not with --model" group with it (groups declared next to the flags in build_parser)."""
    if args.model is None and (given := _given(getattr(args, "only_with_model", None), args)):
        raise ValueError(f"{', '.join(given)}: only with --model ({args.only_with_model.description})")
    if args.model is not None and (given := _given(getattr(args, "not_with_model", None), args)):
        raise ValueError(f"{', '.join(given)}: not with --model ({args.not_with_model.description})")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from damp.locks import exclusive_directory

    _check_device(args.device, "--device")
    _check_mode(args)
    if args.model is not None:
        return _evaluate_factory_model(args)
    target = Path(args.target)
    out = Path(args.out) if args.out else (target if target.is_dir() else target.parent) / "evaluation.json"
    with exclusive_directory(out.parent):
        return _evaluate_run(args, target, out)


def _evaluate_run(args: argparse.Namespace, target: Path, out: Path) -> int:
    import json

    from damp.evaluate import evaluate_saved_run
    from damp.log import progress_bar

    _refuse_existing(out, args.overwrite)
    variants = {k: v for k, v in (("a", args.imagenet_a), ("sketch", args.imagenet_sketch),
                                  ("drawing", args.imagenet_drawing), ("cartoon", args.imagenet_cartoon),
                                  ("d", args.imagenet_d), ("c_bar", args.imagenet_c_bar)) if v}
    bar = progress_bar(None, "evaluate corruptions", not args.quiet)
    with bar:
        results = evaluate_saved_run(str(target), corruptions=args.corruptions, severities=args.severities,
                                     c_dir=args.c_dir, fgsm=args.fgsm, seed=args.seed, device=args.device,
                                     data_root=args.data_root, frost_dir=args.frost_dir, variants=variants,
                                     imagenet_d_map=args.imagenet_d_map, mce_baseline=args.mce_baseline,
                                     progress=lambda *_: bar.update())
    _write_output(out, json.dumps(results, indent=2))
    print(_results_line(results))
    for name, row in (results.get("variants") or {}).items():
        error = row.get("error", row.get("mean_corruption_error"))
        print(f"{name}: error {error:.2f}%" if error is not None else f"{name}: no error reported")
    print(f"wrote {out}")
    return 0


def _evaluate_factory_model(args: argparse.Namespace) -> int:
    """`damp evaluate --model MODULE:FACTORY --data NAME`: a model damp did not train."""
    import json

    from damp.locks import exclusive_directory

    if args.data is None:
        raise ValueError("--model needs --data NAME (the dataset whose test split to evaluate on)")
    from damp.models.user import import_factory

    import_factory(args.model)  # a bad path is one line before any output
    if args.weights is not None and not Path(args.weights).is_file():
        raise FileNotFoundError(f"--weights: {args.weights} " + (
            f"is a directory; name the file (e.g. {Path(args.weights) / 'last.pt'})"
            if Path(args.weights).is_dir() else "not found"))
    for item in args.set or []:
        if item.split("=", 1)[0].strip() in ("model.name", "data.name"):
            raise ValueError(f"--set {item}: use --model / --data for the model and the dataset")
    out = Path(args.out or "evaluation.json")
    with exclusive_directory(out.parent):
        _refuse_existing(out, args.overwrite)
        results = _evaluate_factory(args)
        _write_output(out, json.dumps(results, indent=2))
    print(_results_line(results))
    print(f"wrote {out}")
    return 0


def _evaluate_factory(args: argparse.Namespace) -> dict:
    from damp.corruptions import SEVERITIES
    from damp.robustness import evaluate_factory_model
    from damp.log import progress_bar

    bar = progress_bar(None, "evaluate (images)", not args.quiet)
    done = [0]

    def advance(images: int) -> None:
        bar.update(images - done[0])
        done[0] = images
    with bar:
        results = evaluate_factory_model(
            args.model, args.data, weights=args.weights, data_root=args.data_root, sets=args.set or [],
            corruptions=args.corruptions or "all", severities=args.severities or SEVERITIES,
            fgsm=args.fgsm or (), seed=args.seed, device=args.device, frost_dir=args.frost_dir, c_dir=args.c_dir,
            mce_baseline=args.mce_baseline, progress=advance)
    return results


def _bench_model(args: argparse.Namespace, out: Path) -> int:
    """`damp bench --model`: the corruption benchmark's speed for a user model on random images."""
    import json

    import torch

    from damp.robustness import throughput
    from damp.models.user import build_user_model

    torch.manual_seed(0)
    model = build_user_model(args.model, num_classes=args.classes, in_channels=args.channels).to(args.device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, args.channels, args.image_size, args.image_size), generator=gen,
                           dtype=torch.uint8)
    labels = torch.randint(0, args.classes, (args.images,), generator=gen)
    print(f"measuring {args.model} on {args.images} random {args.image_size}-px images ...", file=sys.stderr)
    row = throughput(model, images, labels, corruptions=args.corruptions, device=args.device,
                     frost_dir=args.frost_dir)
    row.update(model=args.model, image_size=args.image_size, device=args.device, threads=torch.get_num_threads())
    _write_output(out, json.dumps(row, indent=2))
    print(f"{args.model}: {row['images_x_variants_per_s']:.0f} images x variants / s ({row['variants']} variants); "
          f"generation {row['generation_s']:.1f} s = {100 * row['generation_over_inference']:.1f} % of inference "
          f"{row['inference_s']:.1f} s")
    print(f"wrote {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from damp.report import comparison_table, group, write_report

    if args.claims:
        from damp.evidence import write_results

        path = write_results(args.runs, args.out, title=args.title or "damp results",
                             command=args.regenerate_command or "damp report " + " ".join(args.runs) + " --claims")
        print(f"wrote {path}")
        return 0
    from damp.evidence import load_inputs

    runs = load_inputs(args.runs).selected  # a sweep directory stands for its selected points
    path = write_report([r.path for r in runs], args.out, baseline=args.baseline, title=args.title or "damp report")
    print(comparison_table(group(runs)))
    print(f"\nwrote {path}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    import json

    import torch

    from damp.config import resolve_corruptions
    from damp.corruptions import corrupt
    from damp.evaluate import runnable_corruptions, load_saved_run
    from damp.pixels import to_unit_float
    from damp.probe import plot_probe, probe

    _check_device(args.device, "--device")
    out = Path(args.out) if args.out else Path(args.run) / "probe.json"
    _refuse_existing(out, args.overwrite)
    names = resolve_corruptions(args.corruptions)
    if not names:
        raise ValueError("--corruptions: name at least one corruption")
    model, cfg, bundle, _ = load_saved_run(args.run, args.device, args.data_root)
    frost_dir = args.frost_dir or cfg.data.frost_dir
    names, unavailable = runnable_corruptions(names, frost_dir)  # before any work: frost needs its textures
    if not names:
        raise ValueError(f"--corruptions: none available here ({'; '.join(unavailable.values())})")
    if bundle.test_arrays is None:
        raise ValueError(f"{args.run}: damp probe needs a resident test set (digits, fashion_mnist, cifar, tiny)")
    images = to_unit_float(bundle.test_arrays[0][:args.images].to(args.device))
    seed = torch.Generator(device=args.device)

    def corruption(name: str):
        def apply(x, severity):
            return to_unit_float(corrupt(x, name, severity, generator=seed.manual_seed(severity),
                                         frost_dir=frost_dir))
        return apply
    results = probe(model, images, {name: corruption(name) for name in names}, args.severities)
    sigma = cfg.method.std if cfg.method.name == "damp" else None
    _write_output(out, json.dumps({"run": str(args.run), "method": cfg.method.name, "sigma": sigma,
                                   "images": len(images), "unavailable": unavailable, "layers": results}, indent=2))
    for name, reason in unavailable.items():
        print(f"{name}: skipped ({reason})", file=sys.stderr)
    first = next(iter(results))
    for name in names:
        spread = ", ".join(f"sev {s}: {v['robust_std']:.3g}" for s, v in results[first][name].items()
                           if v["robust_std"] is not None)
        print(f"{first} {name}: robust std of the input ratio {spread}" + (f" (σ = {sigma:g})" if sigma else ""))
    if args.figure:
        plot_probe(results, sigma, args.figure)
        print(f"wrote {args.figure}")
    print(f"wrote {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from damp.speed import run_bench

    _check_device(args.device, "--device")
    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    _check_mode(args)
    if args.model is not None:
        return _bench_model(args, out)
    results = run_bench(args.device, args.quick, progress=lambda msg: print(f"measuring {msg} ...", file=sys.stderr))
    _write_output(out, json.dumps(results, indent=2))
    for name, row in results["models"].items():
        ratios = "  ".join(f"{k}/sgd {v:.2f}" for k, v in row["step_time_ratio"].items())
        print(f"{name} (batch {row['batch']}, M={row['num_perturbations']}, damp executor {row['damp_executor']}): "
              f"sgd {row['images_per_s']['sgd']:.0f} img/s  noise floor {row['noise_floor']:.2f}  {ratios}")
        memory = "  ".join(f"{k} {v:.0f}" for k, v in row["peak_memory_mib"].items() if v is not None)
        if memory:
            print(f"  peak step memory (MiB): {memory}")
        for method, t in row["targets"].items():
            print(f"  target {method}/sgd <= {t['target']} ({t['limit']:.2f}): {t['ratio']:.2f} "
                  f"{'met' if t['met'] else 'MISSED'}")
    print(f"trainer / bare loop: {results['trainer']['trainer_vs_bare_loop']:.3f}")
    for preset, row in results["corruptions"].items():
        print(f"corruptions {preset}: {row['total_ms_per_image']:.2f} ms/image for 19x5 "
              f"({row['speedup']:.1f}x the reference)" + (f", unavailable: {', '.join(row['unavailable'])}"
                                                          if row["unavailable"] else ""))
    print(f"evaluation: {results['evaluation']['images_per_s']:.0f} images/s ({results['evaluation']['model']})")
    print(f"wrote {out}")
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors as one stderr line (the usage is one --help away), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="damp", description="DAMP and corruption-robustness tools for PyTorch.")
    parser.add_argument("--version", action="version", version=f"damp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="train baselines and DAMP on the embedded digits data and compare "
                                       "their corruption robustness (CPU, a few minutes)")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--methods", default="all",
                      help="comma-separated methods with a digits preset (configs/digits_small_cnn), or "
                           "'all' (default): sgd,dropout,damp,daap,sam,asam")
    demo.add_argument("--epochs", type=_positive_int, default=20, help="training epochs per method (default: 20)")
    demo.add_argument("--seed", type=int, default=0, help="seed of weights, data order and noise (default: 0)")
    demo.add_argument("--corruptions", default="all", help="comma-separated corruption names, or 'all' (default)")
    demo.add_argument("--severities", type=_severities, default=ALL_SEVERITIES,
                      help="comma-separated severities 1-5 (default: all)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    tr = sub.add_parser("train", help="train one run from a YAML config (torchrun for several processes)")
    tr.add_argument("--config", help="YAML preset (see configs/); without one, the defaults (digits, small_cnn)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config key, e.g. --set trainer.epochs=3 (repeatable)")
    tr.add_argument("--out", required=True, help="run directory (config.yaml, metrics, checkpoints, results.json)")
    tr.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="start over in a non-empty run directory")
    tr.set_defaults(func=cmd_train)

    sw = sub.add_parser("sweep", help="a grid of runs x seeds, resumable; selects each method's best grid point "
                                      "on the hold-out split")
    sw.add_argument("--config", help="YAML preset every run starts from")
    sw.add_argument("--grid", action="append", metavar="KEY=V1,V2,...",
                    help="a grid axis, e.g. --grid method.std=0.1,0.2 (repeatable: the grid is their product; "
                         "none: one point, the config itself)")
    sw.add_argument("--seeds", type=_positive_int, default=1, help="seeds 0..N-1 per grid point (default: 1)")
    sw.add_argument("--final-seeds", type=_positive_int, default=0, metavar="N",
                    help="then run each method's selected point up to N seeds (the paper: tune, then report "
                         "several seeds); default: no extra seeds")
    sw.add_argument("--fresh-seeds", type=_positive_int, default=0, metavar="N",
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
    ev.add_argument("--data-root", help="where the run's dataset lives now (overrides the saved data.root)")
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

    rep = sub.add_parser("report", help="compare runs: Markdown table, error-vs-severity curves, heatmaps")
    rep.add_argument("runs", nargs="+", help="run directories (results.json or evaluation.json) and/or `damp sweep` "
                     "directories (each stands for its selected points, all seeds)")
    rep.add_argument("--out", required=True, help="output directory for report.md (RESULTS.md with --claims) and "
                     "the PNG figures")
    rep.add_argument("--baseline", help="run label the heatmap divides by (default: sgd)")
    rep.add_argument("--claims", action="store_true", help="write RESULTS.md: tables, figures, wall-clock, the "
                     "tuning grid and one paragraph per paper claim with its verdict")
    rep.add_argument("--title", help="the report's title")
    rep.add_argument("--command", dest="regenerate_command",
                     help="the command that regenerates the report, named in RESULTS.md")
    rep.set_defaults(func=cmd_report)

    be = sub.add_parser("bench", help="measure step-time ratios vs SGD, trainer overhead, corruption and "
                                      "evaluation throughput")
    be.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    be.add_argument("--quick", action="store_true", help="fewer repeats, 32-px corruptions only (~2 min on CPU)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
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
        from damp.train import NonFiniteLossError

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


if __name__ == "__main__":
    run()
