"""One command for a lent GPU: every GPU measurement of docs/performance.md, written under one folder.

    bash benchmarks/gpu_suite.sh --device cuda --out benchmarks/results/gpu-<date> [--frost-dir DIR]
    bash benchmarks/gpu_suite.sh --device cpu --out /tmp/suite    # the reduced run CI uses

Writes one JSON per part (environment, step_time_resnet18, step_time_resnet50, throughput,
corruptions, cifar10c, targets), the combined results.json and a short summary.md. Every file is
rewritten as soon as its part ends, so a run cut short keeps what it measured. On CUDA the eager
measurements come first and the torch.compile variants use what is left of --budget-s (480 s), each
recorded as skipped when it would start too late. How long each part took on one H200:
docs/performance.md, "Running it". --models and --executors narrow a rerun to what a lease left out.
What it measures and the targets: docs/performance.md, "GPU".
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from damp import speed

import gpu_measure  # benchmarks/gpu_measure.py, next to this script


@dataclass(frozen=True)
class Plan:
    """Sizes of one suite run; ``PLANS["cuda"]`` is the issue's list, ``PLANS["cpu"]`` a quick CI run."""

    models: dict[str, dict]  # model -> batch, image_size, num_classes, steps_per_sample, executors
    warmup: int
    samples: int
    compile_warmup: int  # >= 2, so a method that retraces every step shows in the second step
    compile_backend: str
    max_compiles: int  # dynamo's recompile limit per variant: after it, that code runs eagerly
    compile_variants: dict[str, tuple[str, ...]]  # model -> variants, most wanted first
    compile_reserve_s: dict[str, float]  # a compiled variant starts only this long before the deadline
    throughput_batches: tuple[int, ...]
    throughput_steps: int
    throughput_compiled_batch: int | None
    dataset_size: int
    corruption_presets: tuple[str, ...]
    corruption_batches: dict[str, int]
    corruption_repeats: int
    c10c_images: int
    c10c_infer_images: int | None
    budget_s: float
    m: int = 8
    notes: list[str] = field(default_factory=list)


_TARGETED = ("sgd", "damp_fused", "sam_fused", "daap_fused", "asam_fused")
PLANS = {
    "cuda": Plan(
        models={"resnet18": {"batch": 128, "image_size": 32, "num_classes": 10, "steps_per_sample": 5},
                "resnet50": {"batch": 256, "image_size": 224, "num_classes": 1000, "steps_per_sample": 2}},
        warmup=3, samples=7, compile_warmup=3, compile_backend="inductor", max_compiles=2,
        compile_variants={"resnet18": _TARGETED + ("damp_split", "sam_split"), "resnet50": _TARGETED},
        compile_reserve_s={"resnet18": 120.0, "resnet50": 200.0, "throughput": 90.0},
        throughput_batches=(512, 1024), throughput_steps=40, throughput_compiled_batch=1024,
        dataset_size=50_000,
        corruption_presets=("cifar", "tiny", "imagenet"),
        corruption_batches={"cifar": 10_000, "tiny": 2_000, "imagenet": 128}, corruption_repeats=2,
        c10c_images=10_000, c10c_infer_images=None, budget_s=480.0,
        notes=["ResNet50 runs at 224 px with 1000 classes (ImageNet shape, batch 256), ResNet18 at 32 px."]),
    "cpu": Plan(
        models={"resnet18": {"batch": 8, "image_size": 32, "num_classes": 10, "steps_per_sample": 1},
                "resnet50": {"batch": 16, "image_size": 32, "num_classes": 10, "steps_per_sample": 1,
                             "executors": ("split",)}},
        warmup=0, samples=1, compile_warmup=2, compile_backend="eager", max_compiles=2,
        compile_variants={"resnet18": ("sgd", "damp_split"), "resnet50": ()},
        compile_reserve_s={"resnet18": 20.0, "resnet50": 20.0, "throughput": 20.0},
        throughput_batches=(16,), throughput_steps=1, throughput_compiled_batch=None, dataset_size=256,
        corruption_presets=("cifar",), corruption_batches={"cifar": 16}, corruption_repeats=1,
        c10c_images=16, c10c_infer_images=64, budget_s=100.0,
        notes=[("Quick CPU run: it exercises the suite end to end; no figure in it is a GPU figure, and "
                "the targets do not apply."),
               ("One step per variant, no warm-up; ResNet18 at batch 8 with every executor, ResNet50 at "
                "32 px and batch 16 (not 224 px and 256) with the split executor only."),
               "torch.compile uses the 'eager' backend (dynamo tracing only, no code generation).",
               ("CIFAR-10-C figures are scaled linearly from 16 images (generation) and 64 images "
                "(inference).")]),
}

PARTS = ("step", "throughput", "corruptions", "cifar10c", "compile")


class Suite:
    """The results, written to ``out`` after every part; parts that raise are recorded, not fatal."""

    def __init__(self, out: Path, device: torch.device, plan: Plan, frost_dir: str | None) -> None:
        self.out, self.device, self.plan, self.frost_dir = out, device, plan, frost_dir
        self.start = time.perf_counter()
        self.deadline = self.start + plan.budget_s
        self.failed: list[str] = []
        self.results: dict = {"environment": {**gpu_measure.environment(device), "git_commit": _git_commit(),
                                              "date": datetime.datetime.now().astimezone().isoformat()},
                              "plan": dict(vars(plan)), "step_time": {},
                              "throughput": {}, "cuda_graphs": gpu_measure.CUDA_GRAPHS}

    def say(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f} s] {message}", file=sys.stderr, flush=True)

    def run(self, label: str, fn, *keys: str) -> None:
        """Run one part and store its dict at ``results[keys...]``; an exception becomes {"error": ...}."""
        self.say(label)
        try:
            value = fn()
        except Exception as err:  # noqa: BLE001 - the other parts still run and are written
            value = {"error": gpu_measure.one_line(err)}
            self.failed.append(f"{label}: {value['error']}")
            self.say(f"{label} failed: {value['error']}")
        node = self.results
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        self.write()

    def write(self) -> None:
        files = {"environment": self.results["environment"], "throughput": self.results["throughput"]}
        files.update({f"step_time_{k}": {**v, "cuda_graphs": gpu_measure.CUDA_GRAPHS}
                      for k, v in self.results["step_time"].items()})
        files.update({k: self.results[k] for k in ("corruptions", "cifar10c") if k in self.results})
        self.results["targets"] = gpu_measure.check_targets(self.results)
        self.results["wall_s"] = time.perf_counter() - self.start
        files["targets"] = self.results["targets"]
        for name, value in files.items():
            _dump(self.out / f"{name}.json", value)
        _dump(self.out / "results.json", self.results)
        (self.out / "summary.md").write_text(summary(self.results))


def _dump(path: Path, value: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    tmp.replace(path)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def run_suite(suite: Suite, parts: tuple[str, ...]) -> None:
    """Eager measurements first, in the issue's order; the compiled variants use the time left."""
    plan, dev, frost = suite.plan, suite.device, suite.frost_dir
    if "step" in parts:
        for name, spec in plan.models.items():
            suite.run(f"step time {name} (eager, every executor)", lambda name=name, spec=spec: eager_part(
                plan, dev, name, spec), "step_time", name, "eager")
    if "throughput" in parts:
        suite.run("training throughput (eager)", lambda: gpu_measure.training_throughput(
            dev, plan.throughput_batches, m=plan.m, dataset_size=plan.dataset_size,
            warmup=max(plan.warmup, 1), steps=plan.throughput_steps), "throughput", "eager")
    if "corruptions" in parts:
        suite.run("corruption throughput", lambda: corruption_part(plan, dev, frost), "corruptions")
    if "cifar10c" in parts:
        suite.run("CIFAR-10-C generation against ResNet18 inference", lambda: gpu_measure.cifar10c_cost(
            dev, images=plan.c10c_images, infer_images=plan.c10c_infer_images, frost_dir=frost), "cifar10c")
    if "compile" in parts:
        run_compiled(suite)


def eager_part(plan: Plan, dev: torch.device, name: str, spec: dict) -> dict:
    return gpu_measure.eager_step_times(name, spec["batch"], dev, m=plan.m, image_size=spec["image_size"],
                                        num_classes=spec["num_classes"], warmup=plan.warmup,
                                        samples=plan.samples, steps_per_sample=spec["steps_per_sample"],
                                        executors=spec.get("executors", gpu_measure.EXECUTOR_VARIANTS))


def corruption_part(plan: Plan, dev: torch.device, frost: str | None) -> dict:
    presets = speed.corruption_throughput(dev, plan.corruption_presets, plan.corruption_batches,
                                          plan.corruption_repeats, frost_dir=frost)
    syncs = gpu_measure.corruption_host_syncs(dev, frost_dir=frost)
    return {"presets": presets, "host_syncs_cifar_all_5_severities": syncs}


def compiled_part(suite: Suite, name: str) -> dict:
    plan, spec = suite.plan, suite.plan.models[name]
    return gpu_measure.compiled_step_times(
        name, spec["batch"], suite.device, list(plan.compile_variants[name]), m=plan.m,
        image_size=spec["image_size"], num_classes=spec["num_classes"], backend=plan.compile_backend,
        warmup=plan.compile_warmup, samples=plan.samples, steps_per_sample=spec["steps_per_sample"],
        max_compiles=plan.max_compiles, deadline=suite.deadline, reserve_s=plan.compile_reserve_s[name])


def compiled_throughput_part(suite: Suite) -> dict:
    plan = suite.plan
    return gpu_measure.training_throughput(suite.device, (plan.throughput_compiled_batch,),
                                           method_names=("sgd",), m=plan.m, dataset_size=plan.dataset_size,
                                           warmup=plan.compile_warmup, steps=plan.throughput_steps,
                                           compile_backend=plan.compile_backend)


def run_compiled(suite: Suite) -> None:
    """torch.compile variants: ResNet18, the compiled throughput, then ResNet50, while the budget lasts."""
    plan = suite.plan
    for name in ("resnet18", "throughput", "resnet50"):
        if name == "throughput":
            throughput = suite.results["throughput"]
            if plan.throughput_compiled_batch is None:
                throughput["compiled"] = {"skipped": "not in this plan"}
            elif time.perf_counter() + plan.compile_reserve_s["throughput"] > suite.deadline:
                throughput["compiled"] = {"skipped": "the suite's time budget was spent"}
            else:
                suite.run("training throughput (torch.compile)", lambda: compiled_throughput_part(suite),
                          "throughput", "compiled")
        elif name not in plan.models:
            continue
        elif not plan.compile_variants.get(name):
            suite.results["step_time"].setdefault(name, {})["compiled"] = {"skipped": "not in this plan"}
        else:
            suite.run(f"step time {name} (torch.compile, {plan.compile_backend})",
                      lambda name=name: compiled_part(suite, name), "step_time", name, "compiled")
    suite.write()


# ------------------------------------------------------------------------------------------------ summary

def _fmt(value, digits: int = 2) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "**no**", None: "n/a"}[value]
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]


def summary(results: dict) -> str:
    """A short markdown digest of ``results`` (the JSON files hold everything)."""
    env = results["environment"]
    versions = f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, damp {env['damp']}"
    lines = [f"# GPU suite on {env.get('gpu') or env['device']}", "",
             (f"{env['date']}; {versions}, commit {env.get('git_commit')}; "
              f"wall time {results.get('wall_s', 0):.0f} s."), ""]
    lines += [f"- {note}" for note in results["plan"].get("notes", [])] + [""]
    lines += ["## Targets", ""] + _table(
        ["target", "value", "goal", "met", "how"],
        [[k, v["value"], v["target"], v["met"] if v["applies"] else "n/a (not CUDA)", _how(v)]
         for k, v in results.get("targets", {}).items()]) + [""]
    lines += _step_lines(results) + _throughput_lines(results) + _corruption_lines(results)
    lines += ["", f"CUDA graphs: {results['cuda_graphs']}."]
    return "\n".join(lines) + "\n"


def _how(target: dict) -> str:
    if target["value"] is None:
        return "not measured"
    return target.get("variant") or ("frost missing" if target.get("complete") is False else "")


def _step_lines(results: dict) -> list[str]:
    lines = ["## Step time against SGD", ""]
    for model, part in results["step_time"].items():
        eager = part.get("eager", {})
        if "error" in eager or not eager:
            lines += [f"{model}: eager failed: {eager.get('error')}", ""]
            continue
        setting = (f"**{model}**, batch {eager['batch']}, {eager['image_size']} px, "
                   f"M = {eager['num_perturbations']}, {eager['precision']}, "
                   f"channels_last {eager['channels_last']}, auto executor {eager['auto_executor']}.")
        lines += [setting, ""]
        compiled = part.get("compiled", {})
        rows = []
        for name, s in eager["seconds_per_step"].items():
            c = compiled.get("variants", {}).get(name, {})
            c_ms = 1000 * c["seconds_per_step"] if "seconds_per_step" in c else None
            c_ratio = compiled.get("ratio_to_sgd", {}).get(name, 1.0 if c_ms else None)
            eager_ratio = eager["ratio_to_sgd"].get(name, 1.0)
            rows.append([name, 1000 * s, eager_ratio, c_ms, c_ratio, _compile_note(c)])
        header = ["variant", "eager ms", "eager / SGD", "compiled ms", "compiled / SGD", "compile note"]
        lines += _table(header, rows) + [""]
    return lines


def _compile_note(record: dict) -> str:
    if "error" in record or "skipped" in record:
        return record.get("error") or record["skipped"]
    if record.get("steady") is not False:
        return ""
    return (f"retraces: graphs per warm-up step {record['graphs_per_warmup_step']}, "
            f"{record['recompiles_while_timed']} while timed, "
            f"recompile limit hit {record['recompile_limit_hits']}x")


def _throughput_lines(results: dict) -> list[str]:
    lines = ["## ResNet18 training throughput (images/s, data on the device)", ""]
    for mode, part in results["throughput"].items():
        if "images_per_s" not in part:
            lines.append(f"- {mode}: {part.get('error') or part.get('skipped')}")
            continue
        for batch, row in part["images_per_s"].items():
            rates = ", ".join(f"{k} {_fmt(v, 0)}" for k, v in row.items())
            lines.append(f"- {mode}, batch {batch}: {rates}")
    return lines + [""]


def _corruption_lines(results: dict) -> list[str]:
    lines = ["## Corruptions on the device", ""]
    presets = results.get("corruptions", {}).get("presets", {})
    rows = []
    for p in presets.values():
        slow = sorted(p["corruptions"].items(), key=lambda kv: kv[1]["ms_per_image"], reverse=True)[:3]
        rows.append([f"{p['size']} px", p["batch"], p["images_per_s"], ", ".join(k for k, _ in slow),
                     ", ".join(p["unavailable"]) or "none"])
    if rows:
        lines += _table(["size", "batch", "images/s (19 x 5)", "slowest", "unavailable"], rows) + [""]
    c10c = results.get("cifar10c", {})
    if "generation_s" in c10c:
        scaled = ", extrapolated" if c10c["extrapolated"] else ""
        line = (f"CIFAR-10-C (10,000 x 19 x 5{scaled}): generation {c10c['generation_s']:.1f} s, ResNet18 "
                f"inference {c10c['inference_s']:.1f} s (ratio {c10c['generation_over_inference']:.2f}).")
        lines += [line, ""]
        lines += [f"- on the CPU: {k}, {v['seconds']:.1f} s ({100 * v['share']:.0f}% of the generation)"
                  for k, v in c10c["cpu_fallbacks"].items()]
        lines += [f"- unavailable: {k} ({v})" for k, v in c10c["unavailable"].items()]
    elif c10c:
        lines.append(f"CIFAR-10-C: {c10c.get('error')}")
    return lines


# ------------------------------------------------------------------------------------------------ entry

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True,
                        help="cuda: the issue's list on one GPU; cpu: a reduced run that exercises the suite")
    parser.add_argument("--out", required=True,
                        help="output folder (created; must be empty unless --overwrite)")
    parser.add_argument("--frost-dir", default=None,
                        help="frost textures (default: damp's lookup: $DAMP_FROST_DIR, imagecorruptions)")
    parser.add_argument("--budget-s", type=float, default=None, help="time budget of the whole run, seconds")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--models", default=None,
                        help=("comma-separated subset of the plan's models for the step times, eager and compiled "
                              "(default: all), e.g. resnet50; throughput, corruptions and CIFAR-10-C ignore it"))
    parser.add_argument("--executors", default=None,
                        help=("comma-separated subset of " + ",".join(gpu_measure.EXECUTOR_VARIANTS)
                              + " for the step times, eager and compiled (default: the plan's)"))
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    return parser.parse_args(argv)


def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for n in text.split(",") if n))


def narrowed(plan: Plan, models: str | None, executors: str | None) -> Plan:
    """``plan`` restricted to some models and executors (a rerun of what a lease left out).

    Raises ValueError naming what is not in the plan.
    """
    keep = _names(models) if models is not None else tuple(plan.models)
    unknown = [m for m in keep if m not in plan.models]
    if unknown or not keep:
        raise ValueError(f"--models: {','.join(unknown) or 'none given'} (choose from {','.join(plan.models)})")
    chosen = _names(executors) if executors is not None else None
    if chosen is not None and (not chosen or set(chosen) - set(gpu_measure.EXECUTOR_VARIANTS)):
        bad = ",".join(sorted(set(chosen) - set(gpu_measure.EXECUTOR_VARIANTS))) or "none given"
        raise ValueError(f"--executors: {bad} (choose from {','.join(gpu_measure.EXECUTOR_VARIANTS)})")

    def spec(name: str) -> dict:
        spec = dict(plan.models[name])
        if chosen is not None:
            own = spec.get("executors", gpu_measure.EXECUTOR_VARIANTS)
            spec["executors"] = tuple(e for e in own if e in chosen)
            if not spec["executors"]:
                raise ValueError(f"--executors: {name} runs only {','.join(own)} in this plan")
        return spec

    def compiled(name: str) -> tuple[str, ...]:
        variants = tuple(v for v in plan.compile_variants.get(name, ())
                         if chosen is None or v == "sgd" or v.partition("_")[2] in chosen)
        return variants if set(variants) - {"sgd"} else ()  # SGD alone compares with nothing

    return replace(plan, models={m: spec(m) for m in keep},
                   compile_variants={m: compiled(m) for m in keep})


def fail(message: str) -> int:
    print(f"gpu_suite: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        return fail("--device cuda requested but no CUDA device is available")
    parts = tuple(p for p in args.parts.split(",") if p)
    if set(parts) - set(PARTS):
        unknown = ",".join(sorted(set(parts) - set(PARTS)))
        return fail(f"unknown --parts {unknown} (choose from {','.join(PARTS)})")
    try:
        plan = narrowed(PLANS[args.device], args.models, args.executors)
    except ValueError as err:
        return fail(str(err))
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        return fail(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if args.budget_s is not None:
        plan = replace(plan, budget_s=args.budget_s)
    suite = Suite(out, torch.device(args.device), plan, args.frost_dir)
    run_suite(suite, parts)
    suite.write()
    suite.say(f"done: {out / 'summary.md'}")
    for line in suite.failed:
        print(f"gpu_suite: part failed: {line}", file=sys.stderr)
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main())
