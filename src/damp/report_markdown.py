"""`damp report`'s report.md: the comparison table of a set of runs, their figures and CE-ratio table.

It sits above :mod:`damp.report` (the run records and tables) and :mod:`damp.report_figures`.
"""

from __future__ import annotations

from pathlib import Path

from damp.checkpoint import write_text
from damp.report import comparison_table, corruption_error_ratios, group, load_run, paper_average_columns, \
    severity_errors
from damp.report_figures import plot_damp_vs_daap, plot_heatmap, plot_severity_curves


def write_report(run_dirs: list[str | Path], out: str | Path, baseline: str | None = None,
                 title: str = "damp report") -> Path:
    """Write ``out/report.md`` and its figures for the given runs; returns the report path."""
    unique = {Path(p).resolve(): p for p in reversed(run_dirs)}  # each run once, as first named
    runs = [load_run(p) for p in reversed(unique.values())]
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
        dataset = groups[baseline][0].dataset
        columns, rows = corruption_error_ratios(groups, baseline, dataset)
        plot_heatmap(columns, rows, baseline, out / "heatmap.png")
        averaged = columns.index("avg")
        lines += [f"Corruption-error ratios against `{baseline}` (paper Figs. 3, 5, 6). `avg` is the mean of "
                  f"the {averaged} columns before it: `none` and the paper's corruption columns present "
                  f"({averaged - 1} of {len(paper_average_columns(dataset))} for {dataset or 'this dataset'})"
                  + ("; columns after `avg` are not averaged" if columns[-1] != "avg" else "") + ".", "",
                  "![corruption error ratio heatmap](heatmap.png)", "",
                  "| run | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
        lines += ["| " + label + " | " + " | ".join(f"{v:.2f}" for v in vals) + " |" for label, vals in rows.items()]
        lines.append("")
    if any(g.startswith("damp") for g in groups) and any(g.startswith("daap") for g in groups):
        plot_damp_vs_daap(groups, out / "damp_vs_daap.png")
        lines += ["DAMP vs. DAAP (paper Fig. 7):", "", "![DAMP vs DAAP](damp_vs_daap.png)", ""]
    lines += ["Runs: " + ", ".join(f"`{r.path}`" for r in runs), ""]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path
