"""The commands that measure a model: evaluate (a run or any model), probe, and bench."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from damp.cli.common import check_device, refuse_existing, results_line, write_output


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

    check_device(args.device, "--device")
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

    refuse_existing(out, args.overwrite)
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
    write_output(out, json.dumps(results, indent=2))
    print(results_line(results))
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
        refuse_existing(out, args.overwrite)
        results = _evaluate_factory(args)
        write_output(out, json.dumps(results, indent=2))
    print(results_line(results))
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
    write_output(out, json.dumps(row, indent=2))
    print(f"{args.model}: {row['images_x_variants_per_s']:.0f} images x variants / s ({row['variants']} variants); "
          f"generation {row['generation_s']:.1f} s = {100 * row['generation_over_inference']:.1f} % of inference "
          f"{row['inference_s']:.1f} s")
    print(f"wrote {out}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    import json

    import torch

    from damp.config import resolve_corruptions
    from damp.corruptions import corrupt
    from damp.evaluate import runnable_corruptions, load_saved_run
    from damp.pixels import to_unit_float
    from damp.probe import plot_probe, probe

    check_device(args.device, "--device")
    target = Path(args.run)
    out = Path(args.out) if args.out else (target if target.is_dir() else target.parent) / "probe.json"
    refuse_existing(out, args.overwrite)
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
    write_output(out, json.dumps({"run": str(args.run), "method": cfg.method.name, "sigma": sigma,
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

    check_device(args.device, "--device")
    out = Path(args.out)
    refuse_existing(out, args.overwrite)
    _check_mode(args)
    if args.model is not None:
        return _bench_model(args, out)
    results = run_bench(args.device, args.quick, progress=lambda msg: print(f"measuring {msg} ...", file=sys.stderr))
    write_output(out, json.dumps(results, indent=2))
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
