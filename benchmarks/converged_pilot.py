"""Pilot of the converged Fashion-MNIST suite: does SGD reach the paper's regime at this size?

Trains SGD with configs/fashion_mnist_resnet8/sgd.yaml on each candidate (training-set size,
width) of a stage and judges the regime by the rules docs/evidence.md fixes before the runs:
- train error (un-augmented training images) <= 1 %;
- hold-out error at least 5 pt above the train error;
- hold-out NLL rising late: the last validation's NLL is >= 1.05 x the smallest, which comes before it.
The suite uses the largest candidate that passes. Writes pilotS.json, pilotS.md and pilotS.png (the
curves) for stage S.

Stage 1: width 16 at 2000 and 5000 images, 100 epochs. Stage 2 was added after stage 1 accepted
neither (both under-fitted: train error 2.6-3.5 %, no late NLL rise) and before it ran: the same
sizes at width 32. Stage 3 was added while stage 2 ran, after its first candidate missed (train
error 1.17 %, NLL flat to the end of the lr decay): the paper's 300 epochs at 2000 images. It was
not run: stage 2's second candidate (5000 images, width 32) was accepted.

    python benchmarks/converged_pilot.py --stage 2 [--out runs/converged_pilot] [--results results/...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from damp.checkpoint import write_text
from damp.config import load_config
from damp.train import train

CONFIG = "configs/fashion_mnist_resnet8/sgd.yaml"
# (data.max_train_images (10 % of them held out), model.width, trainer.epochs) per stage.
STAGES = {1: ((2000, 16, 100), (5000, 16, 100)), 2: ((2000, 32, 100), (5000, 32, 100)),
          3: ((2000, 16, 300), (2000, 32, 300))}
RULES = {"max_train_error": 1.0, "min_gap": 5.0, "nll_rise": 1.05}


def validation_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "val_error" in r]


def judge(results: dict, rows: list[dict]) -> dict:
    """The three regime rules on one run's results and validation rows."""
    train_error, holdout_error = results["train"]["error"], results["holdout"]["error"]
    nll = [r["val_nll"] for r in rows]
    smallest = min(range(len(nll)), key=nll.__getitem__)
    checks = {"train_error_at_most_1pt": train_error <= RULES["max_train_error"],
              "gap_at_least_5pt": holdout_error - train_error >= RULES["min_gap"],
              "holdout_nll_rises_late": smallest < len(nll) - 1 and nll[-1] >= RULES["nll_rise"] * nll[smallest]}
    return {"train_error": train_error, "holdout_error": holdout_error, "test_error": results["clean"]["error"],
            "gap": holdout_error - train_error, "min_holdout_nll": nll[smallest],
            "min_holdout_nll_epoch": rows[smallest]["epoch"], "final_holdout_nll": nll[-1], "checks": checks,
            "accepted": all(checks.values())}


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (err, nll) = plt.subplots(1, 2, figsize=(10, 3.8))
    for size, rows in curves.items():
        epochs = [r["epoch"] for r in rows]
        err.plot(epochs, [r["val_error"] for r in rows], marker="o", ms=3, label=size)
        nll.plot(epochs, [r["val_nll"] for r in rows], marker="o", ms=3, label=size)
    err.set(xlabel="epoch", ylabel="hold-out error %", title="SGD hold-out error")
    nll.set(xlabel="epoch", ylabel="hold-out NLL (nats)", title="SGD hold-out NLL")
    for ax in (err, nll):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/converged_pilot", help="run directories (resumable)")
    parser.add_argument("--results", default="results/fashion_mnist_converged", help="where pilotS.* go")
    parser.add_argument("--stage", type=int, choices=sorted(STAGES), default=2)
    args = parser.parse_args()
    out, results_dir, stage = Path(args.out), Path(args.results), args.stage
    verdicts, curves = {}, {}
    for images, width, epochs in STAGES[stage]:
        size = f"{images} images, width {width}, {epochs} epochs"
        run_dir = out / (f"images={images}" + (f"__width={width}" if width != 16 else "")
                         + (f"__epochs={epochs}" if epochs != 100 else ""))
        cfg = load_config(CONFIG, [f"data.max_train_images={images}", f"model.width={width}",
                                   f"trainer.epochs={epochs}", "eval.corruptions=none", "trainer.progress=false",
                                   f"trainer.log_every={35 * epochs // 100}"])
        done = run_dir / "results.json"
        results = json.loads(done.read_text()) if done.is_file() else train(cfg, run_dir, resume=run_dir.is_dir())
        curves[size] = validation_rows(run_dir)
        verdicts[size] = judge(results, curves[size]) | {"train_seconds": results["meta"]["train_seconds"]}
    accepted = [size for size, v in verdicts.items() if v["accepted"]]
    chosen = accepted[-1] if accepted else None  # candidates are in growing order
    results_dir.mkdir(parents=True, exist_ok=True)
    name = f"pilot{stage}"
    write_text(results_dir / f"{name}.json", json.dumps({"config": CONFIG, "stage": stage, "rules": RULES,
                                                         "candidates": verdicts, "chosen": chosen, "curves": curves},
                                                        indent=2))
    plot(curves, results_dir / f"{name}.png")
    lines = [f"# Converged suite: pilot, stage {stage}", "",
             f"SGD, `{CONFIG}`, {len(next(iter(curves.values())))} validations per run. "
             "Rules fixed before the runs (docs/evidence.md): train error ≤ 1 %, hold-out error ≥ train error + 5 pt, "
             "final hold-out NLL ≥ 1.05 × its minimum.", "",
             "| candidate | train error % | hold-out error % | gap pt | test error % | hold-out NLL min (epoch) "
             "→ final | train s | accepted |", "|---|---|---|---|---|---|---|---|"]
    for size, v in verdicts.items():
        lines.append(f"| {size} | {v['train_error']:.2f} | {v['holdout_error']:.2f} | {v['gap']:.2f} | "
                     f"{v['test_error']:.2f} | {v['min_holdout_nll']:.3f} ({v['min_holdout_nll_epoch']}) → "
                     f"{v['final_holdout_nll']:.3f} | {v['train_seconds']:.0f} | "
                     f"{'yes' if v['accepted'] else 'no: ' + ', '.join(k for k, ok in v['checks'].items() if not ok)}"
                     " |")
    lines += ["", f"Chosen: {chosen if chosen else 'none (no candidate reaches the regime)'}.", "",
              f"![SGD hold-out curves]({name}.png)", ""]
    write_text(results_dir / f"{name}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
