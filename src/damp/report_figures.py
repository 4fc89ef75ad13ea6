"""The figures of `damp report` and RESULTS.md: error against severity, the corruption-error-ratio
heatmap (paper Figs. 3/5/6) and DAMP against DAAP (paper Fig. 7). matplotlib is imported on first use.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from damp.report import Run, severity_errors
from damp.report import _mean_std as mean_std


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use (the library never opens a window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Lay out, write (120 dpi) and close ``fig``: the last step of every figure damp writes."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def plot_severity_curves(groups: dict[str, list[Run]], path: Path) -> None:
    """Error against severity (0 = clean), mean over corruptions; error bars (std over seeds) for groups
    with more than one seed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, runs in groups.items():
        severities = sorted(set.intersection(*[set(severity_errors(r)) for r in runs]))
        stats = [mean_std([severity_errors(r)[s] for r in runs]) for s in severities]
        yerr = [s for _, s in stats] if len(runs) > 1 else None  # no spread to show for one seed
        ax.errorbar(severities, [m for m, _ in stats], yerr=yerr, marker="o", capsize=3, label=label)
    ax.set_xlabel("corruption severity (0 = clean)")
    ax.set_ylabel("top-1 error (%)")
    ax.set_title("Error vs. severity (mean over corruptions)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_heatmap(columns: list[str], rows: dict[str, list[float]], baseline: str, path: Path) -> None:
    """Corruption-error ratios to ``baseline`` (paper Figs. 3/5/6): one row per run group, one column per
    corruption (from :func:`~damp.report.corruption_error_ratios`)."""
    plt = pyplot()
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
    save_figure(fig, path)


FIG7_BUCKETS = {"None": [0], "Mild (1-3)": [1, 2, 3], "Severe (4-5)": [4, 5]}


def _bucket_error(run: Run, severities: list[int]) -> float:
    errors = severity_errors(run)
    vals = [errors[s] for s in severities if s in errors]
    return statistics.fmean(vals) if vals else float("nan")


def damp_vs_daap_bars(groups: dict[str, list[Run]]) -> dict[str, tuple[list[float], list[float] | None]]:
    """Paper Fig. 7 bars: {label: (mean error per bucket, std over seeds or None for a single seed)}."""
    bars = {}
    for label in [g for g in groups if g.startswith(("sgd", "damp", "daap")) and "+" not in g]:
        stats = [mean_std([_bucket_error(r, sev) for r in groups[label]]) for sev in FIG7_BUCKETS.values()]
        bars[label] = ([m for m, _ in stats], [s for _, s in stats] if len(groups[label]) > 1 else None)
    return bars


def plot_damp_vs_daap(groups: dict[str, list[Run]], path: Path) -> None:
    """Paper Fig. 7: error for None (clean), Mild (severities 1-3) and Severe (4-5); error bars
    (std over seeds) only for groups with more than one seed."""
    plt = pyplot()
    bars, buckets = damp_vs_daap_bars(groups), FIG7_BUCKETS
    labels = list(bars)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    width = 0.8 / max(len(labels), 1)
    for k, (label, (means, stds)) in enumerate(bars.items()):
        ax.bar([i + k * width for i in range(len(buckets))], means, width, yerr=stds,
               capsize=3 if stds else 0, label=label)
    ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(buckets))], list(buckets))
    ax.set_ylabel("top-1 error (%)")
    ax.set_title("Multiplicative (DAMP) vs. additive (DAAP) weight noise")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
