"""The commands that train and report: demo, train, sweep, report, and corrupt (writes a -C set)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from damp.cli.common import check_device, refuse_existing, results_line, split_csv


def cmd_demo(args: argparse.Namespace) -> int:
    from damp.demo import DEMO_METHODS, DemoSettings, results_table, run_demo

    methods = split_csv(args.methods) if args.methods != "all" else list(DEMO_METHODS)
    settings = DemoSettings(methods=methods, epochs=args.epochs,
                            seed=DemoSettings.seed if args.seed is None else args.seed,
                            corruptions=split_csv(args.corruptions) if args.corruptions != "all" else (),
                            severities=args.severities)
    results = run_demo(Path(args.out), settings, progress=not args.quiet)
    print(results_table(results))
    missing = next(iter(results["runs"].values())).get("meta", {}).get("unavailable_corruptions", {})
    for name, reason in missing.items():
        print(f"note: {name} not evaluated: {reason}")
    print(f"\nwrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.md'}")
    return 0


def cmd_corrupt(args: argparse.Namespace) -> int:
    from damp import corruptions
    from damp.corruptions.dataset import write_array_c, write_folder_c
    from damp.data import ARRAY_DATASETS, load_array_dataset
    from damp.data.folders import load_folder_images
    from damp.log import progress_bar

    check_device(args.device, "--device")
    names = corruptions.names() if args.corruptions == "all" else split_csv(args.corruptions)
    for name in names:
        corruptions.get(name)
    if args.data != "folder" and args.data.replace("-", "_").lower() not in ARRAY_DATASETS:
        raise ValueError(f"--data: unknown dataset {args.data!r} (choose from {', '.join(ARRAY_DATASETS)}, folder)")
    out = Path(args.out)
    refuse_existing(out, args.overwrite)
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
        check_device(cfg.trainer.device, "trainer.device")
    check_evaluation_inputs(cfg)  # before anything is written: a missing piece would only show after training
    from damp.train import train

    results = train(cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite)
    if results:
        print(results_line(results))
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
                bar.write(f"{run.name}: {results_line(results)}")

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


def _other_regimes(args: argparse.Namespace) -> dict[str, str]:
    """{name: directory} from --other-regime NAME=DIR, checked before anything is written."""
    if (args.regime or args.other_regime) and not args.claims:
        raise ValueError("--regime and --other-regime need --claims")
    if bool(args.regime) != bool(args.other_regime):
        raise ValueError("--regime (this suite's name) and --other-regime NAME=DIR go together")
    if not args.other_regime:
        return {}
    name, sep, directory = args.other_regime.partition("=")
    if not sep or not name or not directory:
        raise ValueError(f"--other-regime: expected NAME=DIR, got {args.other_regime!r}")
    if name == args.regime:
        raise ValueError(f"--other-regime: {name!r} is this suite's --regime too; name the two regimes apart")
    if not Path(directory).is_dir():
        raise NotADirectoryError(f"--other-regime {name}: {directory} is not a directory")
    return {name: directory}


def _report_command(args: argparse.Namespace) -> str:
    """The damp report command line that regenerates this RESULTS.md, from the parsed arguments."""
    words = ["damp", "report", *args.runs, "--out", args.out, "--claims"]
    words += ["--title", args.title] if args.title else []
    words += ["--regime", args.regime, "--other-regime", args.other_regime] if args.regime else []
    words += ["--skip-unfinished"] if args.skip_unfinished else []
    words += [w for path in args.bench for w in ("--bench", path)]
    return shlex.join(words)


def cmd_report(args: argparse.Namespace) -> int:
    from damp.report import comparison_table, group
    from damp.report_markdown import write_report

    others = _other_regimes(args)
    if args.bench and not args.claims:
        raise ValueError("--bench needs --claims (it sets `damp bench`'s ratios beside RESULTS.md's wall-clock)")
    if args.claims:
        from damp.evidence import write_results

        path = write_results(args.runs, args.out, title=args.title or "damp results",
                             command=args.regenerate_command or _report_command(args),
                             regime=args.regime, others=others, skip_unfinished=args.skip_unfinished,
                             bench=args.bench)
        print(f"wrote {path}")
        return 0
    from damp.suite_inputs import load_inputs

    # a sweep directory stands for its selected points
    inputs = load_inputs(args.runs, skip_unfinished=args.skip_unfinished)
    if inputs.unfinished:
        print("left out, not finished: " + ", ".join(f"{d} ({state})" for d, state in inputs.unfinished.items()),
              file=sys.stderr)
    runs = inputs.selected
    path = write_report([r.path for r in runs], args.out, baseline=args.baseline, title=args.title or "damp report")
    print(comparison_table(group(runs)))
    print(f"\nwrote {path}")
    return 0
