"""Reports: compare runs in a Markdown table plus PNG figures (matplotlib imported lazily).

Runs with the same method and hyperparameters (differing only by seed) are grouped and shown as
mean ± std. Reads each run's ``evaluation.json`` (from `damp evaluate`) or else its ``results.json``.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from damp.corruptions import CANONICAL_NAMES


@dataclass
class Run:
    path: Path
    label: str
    seed: int
    results: dict


def run_label(cfg: dict) -> str:
    """A readable name for a run's method and hyperparameters, e.g. "damp σ=0.2", "sgd + zoom_blur"."""
    method, model, data = cfg.get("method", {}), cfg.get("model", {}), cfg.get("data", {})
    name = method.get("name", "sgd")
    if name == "dropout" or (name == "sgd" and model.get("dropout", 0) > 0):
        label = f"dropout p={model.get('dropout', 0):g}"
    elif name in ("damp", "daap"):
        label = f"{name} σ={method.get('std'):g}"
    elif name in ("sam", "asam"):
        label = f"{name} ρ={method.get('rho'):g}"
    else:
        label = name
    if data.get("train_corruption"):
        label += f" + {data['train_corruption']}"
    return label


def load_run(path: str | Path) -> Run:
    """One run directory: its config (config.yaml) and results (evaluation.json or results.json)."""
    path = Path(path)
    results_file = next((path / f for f in ("evaluation.json", "results.json") if (path / f).is_file()), None)
    if results_file is None:
        raise FileNotFoundError(f"{path}: no evaluation.json or results.json (train or evaluate the run first)")
    try:
        results = json.loads(results_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{results_file}: not valid JSON ({err})") from None
    cfg = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else {}
    if not isinstance(results, dict) or "clean" not in results:
        raise ValueError(f"{results_file}: not a damp results file (no 'clean' metrics)")
    return Run(path, run_label(cfg or {}), int((cfg or {}).get("seed", 0)), results)


def group(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    return groups


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _fmt(values: list[float]) -> str:
    mean, std = _mean_std(values)
    return f"{mean:.2f}" + (f" ± {std:.2f}" if len(values) > 1 else "")


def severity_errors(run: Run) -> dict[int, float]:
    """{0: clean error, 1..5: mean error over corruptions at that severity}."""
    out = {0: run.results["clean"]["error"]}
    for s, v in run.results.get("summary", {}).get("severity_error", {}).items():
        out[int(s)] = v
    return out


def comparison_table(groups: dict[str, list[Run]]) -> str:
    """Markdown table: clean, per-severity error, averages and FGSM, mean ± std over seeds."""
    severities = sorted({s for runs in groups.values() for r in runs for s in severity_errors(r) if s > 0})
    eps = sorted({row["eps"] for runs in groups.values() for r in runs for row in r.results.get("fgsm", [])})
    has_15 = any("mean_error_15x5" in r.results.get("summary", {}) for rs in groups.values() for r in rs)
    header = ["run", "seeds", "clean"] + [f"sev {s}" for s in severities] + ["corr. avg"]
    header += ["15×5 avg"] if has_15 else []
    header += [f"FGSM {e:.4g}" for e in eps]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, runs in groups.items():
        row = [label, str(len(runs)), _fmt([r.results["clean"]["error"] for r in runs])]
        for s in severities:
            vals = [severity_errors(r)[s] for r in runs if s in severity_errors(r)]
            row.append(_fmt(vals) if vals else "–")
        vals = [r.results["summary"]["mean_corruption_error"] for r in runs if r.results.get("summary")]
        row.append(_fmt(vals) if vals else "–")
        if has_15:
            vals = [r.results["summary"]["mean_error_15x5"] for r in runs if "mean_error_15x5" in r.results["summary"]]
            row.append(_fmt(vals) if vals else "–")
        for e in eps:
            vals = [x["error"] for r in runs for x in r.results.get("fgsm", []) if x["eps"] == e]
            row.append(_fmt(vals) if vals else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def corruption_error_ratios(groups: dict[str, list[Run]], baseline: str) -> tuple[list[str], dict[str, list[float]]]:
    """Paper Figs. 3/5/6: CE_c = sum_s E_{s,c} / sum_s E^baseline_{s,c} per corruption (seed means),
    then "none" (the clean-error ratio) and "avg" (the mean of the preceding columns)."""
    def sums(runs: list[Run]) -> dict[str, float]:
        per_corruption = {}
        for name in CANONICAL_NAMES:
            vals = [sum(v["error"] for v in r.results["corruptions"][name].values()) for r in runs
                    if name in r.results.get("corruptions", {})]
            if vals:
                per_corruption[name] = statistics.fmean(vals)
        per_corruption["none"] = statistics.fmean(r.results["clean"]["error"] for r in runs)
        return per_corruption

    base = sums(groups[baseline])
    columns = [c for c in base if c != "none" and all(c in sums(rs) for rs in groups.values())] + ["none"]
    rows = {}
    for label, runs in groups.items():
        s = sums(runs)
        ratios = [s[c] / base[c] if base[c] > 0 else float("nan") for c in columns]
        rows[label] = ratios + [statistics.fmean(ratios)]
    return columns + ["avg"], rows


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_severity_curves(groups: dict[str, list[Run]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, runs in groups.items():
        severities = sorted(set.intersection(*[set(severity_errors(r)) for r in runs]))
        stats = [_mean_std([severity_errors(r)[s] for r in runs]) for s in severities]
        ax.errorbar(severities, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=label)
    ax.set_xlabel("corruption severity (0 = clean)")
    ax.set_ylabel("top-1 error (%)")
    ax.set_title("Error vs. severity (mean over corruptions)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_heatmap(columns: list[str], rows: dict[str, list[float]], baseline: str, path: Path) -> None:
    plt = _plt()
    labels = list(rows)
    values = [rows[label] for label in labels]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(columns), 0.9 + 0.45 * len(labels)))
    image = ax.imshow(values, cmap="RdBu_r", vmin=0.5, vmax=1.5, aspect="auto")
    ax.set_xticks(range(len(columns)), [c.replace("_", " ") for c in columns], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                    color="white" if abs(v - 1) > 0.35 else "black")
    fig.colorbar(image, ax=ax, label=f"corruption error / {baseline} (lower is better)")
    ax.set_title(f"Corruption error ratio vs. {baseline} (none = clean error ratio)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_damp_vs_daap(groups: dict[str, list[Run]], path: Path) -> None:
    """Paper Fig. 7: error for None (clean), Mild (severities 1-3) and Severe (4-5)."""
    plt = _plt()
    labels = [g for g in groups if g.startswith(("sgd", "damp", "daap")) and "+" not in g]
    buckets = {"None": [0], "Mild (1-3)": [1, 2, 3], "Severe (4-5)": [4, 5]}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    width = 0.8 / max(len(labels), 1)
    for k, label in enumerate(labels):
        means, stds = [], []
        for severities in buckets.values():
            vals = [statistics.fmean(severity_errors(r)[s] for s in severities if s in severity_errors(r))
                    for r in groups[label]]
            m, s = _mean_std(vals)
            means.append(m)
            stds.append(s)
        ax.bar([i + k * width for i in range(len(buckets))], means, width, yerr=stds, capsize=3, label=label)
    ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(buckets))], list(buckets))
    ax.set_ylabel("top-1 error (%)")
    ax.set_title("Multiplicative (DAMP) vs. additive (DAAP) weight noise")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run_dirs: list[str | Path], out: str | Path, baseline: str | None = None,
                 title: str = "damp report") -> Path:
    """Write ``out/report.md`` and its figures for the given runs; returns the report path."""
    runs = [load_run(p) for p in run_dirs]
    if not runs:
        raise ValueError("no runs given")
    groups = group(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"{len(runs)} runs in {len(groups)} groups (mean ± std over seeds). "
             "Top-1 error in %, lower is better; `sev s` is the mean over corruptions at severity s.", "",
             comparison_table(groups), ""]
    sources = {r.results.get("meta", {}).get("corruption_source") for r in runs} - {None}
    if sources:
        lines += ["Corruption source: " + "; ".join(sorted(sources)) + ".", ""]
    missing = {k: v for r in runs for k, v in r.results.get("meta", {}).get("unavailable_corruptions", {}).items()}
    if missing:
        lines += [f"Not evaluated (unavailable): {', '.join(sorted(missing))}.", ""]
    if any(severity_errors(r).keys() - {0} for r in runs):
        plot_severity_curves(groups, out / "severity_curves.png")
        lines += ["![error vs severity](severity_curves.png)", ""]
    baseline = baseline or next((g for g in groups if g == "sgd"), None)
    if baseline is not None and baseline not in groups:
        raise ValueError(f"--baseline {baseline!r} is not one of the runs: {', '.join(groups)}")
    if baseline is not None and all(r.results.get("corruptions") for r in runs):
        columns, rows = corruption_error_ratios(groups, baseline)
        plot_heatmap(columns, rows, baseline, out / "heatmap.png")
        lines += [f"Corruption-error ratios against `{baseline}` (paper Figs. 3, 5, 6):", "",
                  "![corruption error ratio heatmap](heatmap.png)", "",
                  "| run | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
        lines += ["| " + label + " | " + " | ".join(f"{v:.2f}" for v in vals) + " |" for label, vals in rows.items()]
        lines.append("")
    if any(g.startswith("damp") for g in groups) and any(g.startswith("daap") for g in groups):
        plot_damp_vs_daap(groups, out / "damp_vs_daap.png")
        lines += ["DAMP vs. DAAP (paper Fig. 7):", "", "![DAMP vs DAAP](damp_vs_daap.png)", ""]
    lines += ["Runs: " + ", ".join(f"`{r.path}`" for r in runs), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
