"""Pilot of the converged Fashion-MNIST suite: does SGD reach the paper's regime at this size?

Trains SGD with configs/fashion_mnist_resnet8/sgd.yaml on each candidate training-set size and
judges the regime by the rules docs/evidence.md fixes before the runs:
- train error (un-augmented training images) <= 1 %;
- hold-out error at least 5 pt above the train error;
- hold-out NLL rising late: the last validation's NLL is >= 1.05 x the smallest, which comes before it.
The suite uses the largest candidate that passes. Writes pilot.json, pilot.md and pilot.png (the curves).

    python benchmarks/converged_pilot.py [--out runs/converged_pilot] [--results results/fashion_mnist_converged]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from damp.checkpoint import write_text
from damp.config import load_config
from damp.train import train

CONFIG = "configs/fashion_mnist_resnet8/sgd.yaml"
CANDIDATES = (2000, 5000)  # data.max_train_images (10 % of them held out)
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


def plot(curves: dict[int, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (err, nll) = plt.subplots(1, 2, figsize=(10, 3.8))
    for size, rows in curves.items():
        epochs = [r["epoch"] for r in rows]
        err.plot(epochs, [r["val_error"] for r in rows], marker="o", ms=3, label=f"{size} images")
        nll.plot(epochs, [r["val_nll"] for r in rows], marker="o", ms=3, label=f"{size} images")
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
    parser.add_argument("--results", default="results/fashion_mnist_converged", help="where pilot.* go")
    args = parser.parse_args()
    out, results_dir = Path(args.out), Path(args.results)
    verdicts, curves = {}, {}
    for size in CANDIDATES:
        run_dir = out / f"images={size}"
        cfg = load_config(CONFIG, [f"data.max_train_images={size}", "eval.corruptions=none",
                                   "trainer.progress=false"])
        done = run_dir / "results.json"
        results = json.loads(done.read_text()) if done.is_file() else train(cfg, run_dir, resume=run_dir.is_dir())
        curves[size] = validation_rows(run_dir)
        verdicts[size] = judge(results, curves[size]) | {"train_seconds": results["meta"]["train_seconds"]}
    accepted = [size for size, v in verdicts.items() if v["accepted"]]
    chosen = max(accepted) if accepted else None
    results_dir.mkdir(parents=True, exist_ok=True)
    write_text(results_dir / "pilot.json", json.dumps({"config": CONFIG, "rules": RULES, "candidates": verdicts,
                                                       "chosen": chosen, "curves": curves}, indent=2))
    plot(curves, results_dir / "pilot.png")
    lines = ["# Converged suite: pilot", "", f"SGD, `{CONFIG}`, {len(curves[CANDIDATES[0]])} validations per run. "
             "Rules fixed before the runs (docs/evidence.md): train error ≤ 1 %, hold-out error ≥ train error + 5 pt, "
             "final hold-out NLL ≥ 1.05 × its minimum.", "",
             "| training images | train error % | hold-out error % | gap pt | test error % | hold-out NLL min (epoch) "
             "→ final | train s | accepted |", "|---|---|---|---|---|---|---|---|"]
    for size, v in verdicts.items():
        lines.append(f"| {size} | {v['train_error']:.2f} | {v['holdout_error']:.2f} | {v['gap']:.2f} | "
                     f"{v['test_error']:.2f} | {v['min_holdout_nll']:.3f} ({v['min_holdout_nll_epoch']}) → "
                     f"{v['final_holdout_nll']:.3f} | {v['train_seconds']:.0f} | "
                     f"{'yes' if v['accepted'] else 'no: ' + ', '.join(k for k, ok in v['checks'].items() if not ok)} |")
    lines += ["", f"Chosen: {chosen if chosen else 'none (no candidate reaches the regime)'}.", "",
              "![SGD hold-out curves](pilot.png)", ""]
    write_text(results_dir / "pilot.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
