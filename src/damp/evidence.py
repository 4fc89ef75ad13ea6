"""RESULTS.md: a suite's tables and figures, and a verdict per paper claim (paper §5) that says, from the
measured numbers alone, whether the claim reproduced at this scale (:mod:`damp.verdicts` by paired
statistics under the protocol, :mod:`damp.mean_claims` by means for the claims it does not cover).

Input is a list of `damp sweep` directories (each method's selected grid point, its reported seeds, is
reported; the other grid points only feed the tuning table and the DAMP-vs-DAAP figure) and/or plain
run directories. Every verdict follows a rule written next to it in the text; nothing is hard-coded.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from damp.checkpoint import write_text
from damp.evidence_figures import plot_learning_curves, plot_pareto
from damp.isolated_cost import BenchRow, bench_table, isolated_sentence, ordering_note, read_bench_rows
from damp.mean_claims import claim_sections, corruption_mean, mean_std
from damp.paired import EQUIVALENCE_MARGIN, paired_table, write_runs_csv
from damp.regimes import other_regimes, regimes_section
from damp.report import Run, comparison_table, corruption_error_ratios, group
from damp.report_figures import plot_damp_vs_daap, plot_heatmap, plot_severity_curves
from damp.suite_inputs import RUNNING, SuiteInputs, arm, arms_of, fresh_seeds_only, load_inputs, method_name
from damp.verdicts import protocol_section


def _seconds(run: Run) -> float | None:
    return (run.results.get("meta") or {}).get("train_seconds")


def timing_table(arms: dict[str, list[Run]]) -> tuple[str, dict[str, float]]:
    """Markdown wall-clock table (training loop, mean ± std over seeds) and {arm: time / SGD time}."""
    seconds = {a: [s for r in runs if (s := _seconds(r)) is not None] for a, runs in arms.items()}
    base = statistics.fmean(seconds["sgd"]) if seconds.get("sgd") else None
    ratios = {a: statistics.fmean(v) / base for a, v in seconds.items() if v and base}
    lines = ["| method | training time (s) | time / SGD |", "|---|---|---|"]
    for a, values in seconds.items():
        lines.append(f"| {arms[a][0].label} | {mean_std(values) if values else 'n/a'} | "
                     f"{ratios[a]:.2f} |" if a in ratios else f"| {arms[a][0].label} | n/a | n/a |")
    return "\n".join(lines), ratios


def tuning_table(sweeps: dict[str, dict]) -> str:
    """Every grid point of every sweep with the hold-out error that selected it and its hold-out
    corruption error (means over the tuning seeds only), the seeds it ran in all, and which point
    was selected (flagged when it is still at the grid's edge after the allowed extensions)."""
    lines = ["| run | grid point | seeds run | hold-out error % (tuning seeds) | hold-out corruption error % "
             "| selected |", "|---|---|---|---|---|---|"]
    for summary in sweeps.values():
        chosen = [c["point"] for c in summary["selection"].values()]
        tuning_seeds = summary.get("tuning_seeds")
        mark = "yes, still at the grid's edge" if summary.get("still_at_edge") else "yes"

        def mean(row: dict, key: str) -> str:
            values = [r[key] for r in row["runs"] if r.get(key) is not None
                      and (tuning_seeds is None or r["seed"] < tuning_seeds)]
            return f"{statistics.fmean(values):.2f}" if values else "n/a"
        for row in summary["points"]:
            point = ", ".join(f"{k}={v}" for k, v in row["point"].items()) or "(preset)"
            lines.append(f"| {row['label']} | {point} | {len(row['runs'])} | {mean(row, 'holdout_error')} | "
                         f"{mean(row, 'holdout_corruption_error')} | {mark if row['point'] in chosen else ''} |")
    return "\n".join(lines)


def write_results(paths: list[str | Path], out: str | Path, *, title: str, command: str,
                  regime: str | None = None, others: dict[str, str | Path] | None = None,
                  skip_unfinished: bool = False, bench: list[str | Path] | None = None) -> Path:
    """Write ``out/RESULTS.md`` and its figures from sweep and run directories; returns its path.

    With ``regime`` (this suite's name) and ``others`` ({name: directory of another suite's sweeps}),
    a suite that follows the protocol also gets "The two regimes" (:mod:`damp.regimes`). With
    ``skip_unfinished``, sweeps still running are left out and named at the top. ``bench``: `damp
    bench` JSON files whose row for the suite's model is set beside the wall-clock
    (:mod:`damp.isolated_cost`).
    """
    inputs = load_inputs(paths, skip_unfinished=skip_unfinished)
    inputs.selected.sort(key=_arm_order)
    bench_rows, bench_missing = read_bench_rows(list(bench or []), inputs.selected)
    isolated = isolated_sentence(bench_rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups = group(inputs.selected)
    arms = arms_of(inputs.selected)
    dataset = inputs.selected[0].dataset
    # The protocol of docs/evidence.md: only fresh seeds are reported, and a tuning run's test numbers are
    # never read (its grid points are compared on the hold-out split).
    protocol = bool(inputs.sweeps) and all(fresh_seeds_only(summary) for summary in inputs.sweeps.values())
    lines = [f"# {title}", "", f"Generated by `{command}` (`damp report --claims`); do not edit by hand.", "",
             _setup(inputs.selected), "", *_unfinished(inputs.unfinished), *_headline(arms),
             "## Results of the selected points", "",
             "Top-1 error in %, mean ± std over seeds; `sev s` averages the corruptions at severity s.", "",
             comparison_table(groups), ""]
    plot_severity_curves(groups, out / "severity_curves.png")
    lines += ["![error vs severity](severity_curves.png)", ""]
    write_runs_csv(arms, out / "runs.csv")
    lines += _paired_sections(arms, inputs, protocol, regime, others, isolated)
    lines += _ratio_figures(inputs, arms, out, protocol)
    timing, ratios = timing_table(arms)
    lines += ["## Wall-clock per method", "", "Training loop only (evaluation excluded), runs one after another "
              "on the machine the suite ran on. Other work may have shared that machine, and arms that ran on "
              "different days or code versions compare only loosely; `damp bench` measures step-time ratios in "
              "isolation.", "", timing, ""]
    lines += _isolated_section(bench_rows, bench_missing)
    lines += _tuning_sections(inputs, arms, out)
    cost_context = " ".join(t for t in (isolated, ordering_note(bench_rows, ratios)) if t)
    lines += ["## The paper's claims at this scale", ""] + claim_sections(groups, arms, ratios, inputs.tuning,
                                                                        dataset, protocol, cost_context)
    path = out / "RESULTS.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _paired_sections(arms: dict[str, list[Run]], inputs: SuiteInputs, protocol: bool, regime: str | None,
                     others: dict[str, str | Path] | None, isolated: str = "") -> list[str]:
    """The paired differences to SGD, to DAMP and (DAMP + AugMix's) to AugMix; under the protocol, its
    verdicts and "The two regimes"."""
    if "sgd" not in arms or len(arms["sgd"]) < 2:
        return []
    table, _ = paired_table(arms)
    lines = ["## Paired differences to SGD", "", "Arm − SGD in pt of top-1 error, paired by seed (the same seed "
             "gives the same initial weights and data order), with 95 % t-intervals; severity p-values are "
             f"Holm-adjusted across the severities; clean equivalence is TOST within ±{EQUIVALENCE_MARGIN:g} "
             "pt; the mean corruption error's interval is descriptive, with no test (docs/evidence.md). "
             "Every run's numbers: `runs.csv`.", "", table, ""]
    if len(arms.get("damp", [])) >= 2 and len(arms) > 2:  # every other arm against DAMP itself
        table, _ = paired_table(arms, baseline="damp")
        lines += ["## Paired differences to DAMP", "", "Arm − DAMP, paired and tested as above: the baselines "
                  "and the methods beyond the paper against DAMP itself.", "", table, ""]
    if all(len(arms.get(name, [])) >= 2 for name in (AUGMIX_ARM, DAMP_AUGMIX_ARM)):
        table, _ = paired_table({name: arms[name] for name in (AUGMIX_ARM, DAMP_AUGMIX_ARM)}, baseline=AUGMIX_ARM)
        lines += ["## Paired differences to AugMix", "", "DAMP + AugMix − AugMix, paired and tested as above: what "
                  "DAMP's weight noise adds to the input-space baseline (the combination the paper's §6 "
                  "proposes).", "", table, ""]
    if protocol:
        lines += protocol_section(arms, inputs.tuning, arm, isolated)
        if regime and others:
            lines += regimes_section([(regime, arms, inputs.tuning), *other_regimes(others)], arm)
    return lines


def _ratio_figures(inputs: SuiteInputs, arms: dict[str, list[Run]], out: Path, protocol: bool) -> list[str]:
    """The CE-ratio heatmap (paper Figs. 3/5/6) and DAMP vs DAAP (Fig. 7), where their arms are present."""
    lines, groups = [], group(inputs.selected)
    if "sgd" in arms:
        baseline = arms["sgd"][0].label
        columns, rows = corruption_error_ratios(groups, baseline, inputs.selected[0].dataset)
        plot_heatmap(columns, rows, baseline, out / "heatmap.png")
        lines += ["Corruption-error ratios to SGD (paper Figs. 3/5/6; `avg` is the paper's average of the 15 "
                  "common corruptions and clean):", "", "![CE-ratio heatmap](heatmap.png)", ""]
    if "damp" in arms and "daap" in arms:
        grid = [] if protocol else [r for r in inputs.tuning if arm(r) in ("damp", "daap")]
        plot_damp_vs_daap(group(inputs.selected + grid), out / "damp_vs_daap.png")
        caption = ("DAMP vs DAAP at their selected σ (paper Fig. 7; std over the reported seeds; the other grid "
                   "points are compared on the hold-out split, in the Pareto figure):") if protocol else \
            "DAMP vs DAAP over their σ grids (paper Fig. 7; error bars only for points run with several seeds):"
        lines += [caption, "", "![DAMP vs DAAP](damp_vs_daap.png)", ""]
    return lines


def _isolated_section(rows: list[BenchRow], missing: list[str]) -> list[str]:
    """The suite model's step-time ratios from `damp bench` files, measured in isolation."""
    if not rows and not missing:
        return []
    lines = ["Step time against SGD in isolation: `damp bench` on this suite's model, batch and M (each file is "
             "one run of it, every method timed round-robin on an otherwise idle machine; docs/performance.md). "
             "The noise floor is SGD's step plus drawing DAMP's noise, over SGD's step.", ""]
    if rows:
        lines += [bench_table(rows), ""]
    return lines + [*missing, ""] if missing else lines


def _tuning_sections(inputs: SuiteInputs, arms: dict[str, list[Run]], out: Path) -> list[str]:
    """The tuning grid on the hold-out split, its Pareto figure and the learning curves (sweeps only)."""
    if not inputs.sweeps:
        return []
    lines = ["## Tuning on the hold-out split", "", tuning_table(inputs.sweeps), ""]
    if plot_pareto(inputs.tuning, arm, out / "pareto.png"):
        lines += ["Hold-out clean error against hold-out corruption error of every grid point (tuning seed; "
                  "lower-left is better on both; the reported seeds are not in it):", "",
                  "![hold-out Pareto picture](pareto.png)", ""]
    if plot_learning_curves(arms, out / "learning_curves.png"):
        lines += ["Learning curves of the reported runs (thin: one seed; thick: the mean; the training loss is "
                  "the mean since the previous logged step, at the perturbed weights for the weight-noise "
                  "methods):", "", "![learning curves](learning_curves.png)", ""]
    return lines


AUGMIX_ARM, DAMP_AUGMIX_ARM = "sgd + augmix", "damp + augmix"  # names as `suite_inputs.arm` forms them
ARM_ORDER = ("sgd", "dropout", "damp", "daap", "sam", "asam", "rwp", "mrwp", AUGMIX_ARM, DAMP_AUGMIX_ARM)


def _arm_order(run: Run) -> tuple[int, str, int]:
    """`ARM_ORDER` (the paper's arms, then RWP, m-RWP and the AugMix arms), then the single-corruption
    arms by name, then seed."""
    name = arm(run)
    return (ARM_ORDER.index(name) if name in ARM_ORDER else len(ARM_ORDER), name, run.seed)


def _unfinished(states: dict[str, str]) -> list[str]:
    """A warning naming the sweeps that had not finished, or not started, when the report was written."""
    if not states:
        return []
    names = ", ".join(Path(d).name + ("" if state == RUNNING else f" ({state})") for d, state in states.items())
    return [f"**Incomplete.** These sweeps had not finished and are left out: {names}. Every section below reads "
            "the finished ones only; run the suite's command again to finish them and regenerate this file.", ""]


def _headline(arms: dict[str, list[Run]]) -> list[str]:
    """DAMP against SGD in one sentence: mean corruption error and clean error, mean ± std over seeds."""
    if "damp" not in arms or "sgd" not in arms:
        return []
    damp, sgd = arms["damp"], arms["sgd"]
    damp_corr, sgd_corr = ([corruption_mean(r) for r in runs] for runs in (damp, sgd))
    return [f"**Headline.** {damp[0].label} vs {sgd[0].label} ({len(damp)} and {len(sgd)} seeds): mean corruption "
            f"error {mean_std(damp_corr)} vs {mean_std(sgd_corr)} %, clean "
            f"error {mean_std([r.results['clean']['error'] for r in damp])} vs "
            f"{mean_std([r.results['clean']['error'] for r in sgd])} %.", ""]


def _setup(runs: list[Run]) -> str:
    """One sentence naming what was trained, from the runs' configs."""
    cfg = runs[0].config
    d, m, t = cfg.get("data") or {}, cfg.get("model") or {}, cfg.get("trainer") or {}
    methods_by_m: dict[int, list[str]] = {}  # M with the methods that use it: RWP's M = 1 beside DAMP's 8
    for r in runs:
        if (name := method_name(r)) != "sgd":
            named = methods_by_m.setdefault((r.config.get("method") or {}).get("num_perturbations"), [])
            if name not in named:
                named.append(name)
    sub_batches = "; ".join(f"{count} ({', '.join(names)})" for count, names in
                            sorted(methods_by_m.items(), key=lambda item: -(item[0] or 0)))
    return (f"Setup: {d.get('name')} ({d.get('max_train_images') or 'all'} training images, "
            f"{d.get('holdout', 0):.0%} of them held out for tuning; {d.get('max_test_images') or 'all'} test "
            f"images), {m.get('name')} width {m.get('width')}, {t.get('epochs')} epochs, batch "
            f"{d.get('batch_size')}" + (f", M = {sub_batches}" if sub_batches else "") + ".")
