"""RESULTS.md: a suite's tables and figures, and one paragraph per paper claim (paper §5) that says,
from the measured numbers alone, whether the claim reproduced at this scale.

Input is a list of `damp sweep` directories (each method's selected grid point, its reported seeds, is
reported; the other grid points only feed the tuning table and the DAMP-vs-DAAP figure) and/or plain
run directories. Every verdict follows a rule written next to it in the text; nothing is hard-coded.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from damp import methods
from damp.checkpoint import write_text
from damp.evidence_figures import plot_learning_curves, plot_pareto
from damp.paired import EQUIVALENCE_MARGIN, paired_table, write_runs_csv
from damp.regimes import other_regimes, regimes_section
from damp.verdicts import protocol_section
from damp.report import _mean_std as _stats
from damp.report import (Run, comparison_table, corruption_error_ratios, group, plot_damp_vs_daap, plot_heatmap,
                         plot_severity_curves, severity_errors)
from damp.suite_inputs import SuiteInputs, arm, arms_of, corruption_error, fresh_seeds_only, load_inputs

# "About equal clean error": a clean-error ratio to SGD within the paper's own CIFAR-10 DAMP ratio (1.03, Fig. 5).
CLEAN_RATIO_TOLERANCE = 0.03


def _pm(values: list[float]) -> str:
    """mean ± std, the std shown even for one value (0.00), so every cell of a table has both."""
    mean, std = _stats(values)
    return f"{mean:.2f} ± {std:.2f}"


def _corruption_mean(run: Run) -> float:
    value = corruption_error(run)
    return float("nan") if value is None else value


def _seconds(run: Run) -> float | None:
    return (run.results.get("meta") or {}).get("train_seconds")


def timing_table(arms: dict[str, list[Run]]) -> tuple[str, dict[str, float]]:
    """Markdown wall-clock table (training loop, mean ± std over seeds) and {arm: time / SGD time}."""
    seconds = {a: [s for r in runs if (s := _seconds(r)) is not None] for a, runs in arms.items()}
    base = statistics.fmean(seconds["sgd"]) if seconds.get("sgd") else None
    ratios = {a: statistics.fmean(v) / base for a, v in seconds.items() if v and base}
    lines = ["| method | training time (s) | time / SGD |", "|---|---|---|"]
    for a, values in seconds.items():
        lines.append(f"| {arms[a][0].label} | {_pm(values) if values else 'n/a'} | "
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


def claim_severity(arms: dict[str, list[Run]], other: str) -> str:
    """Claim 1: DAMP lowers the error at every severity against SGD/Dropout at about equal clean error."""
    damp, base = arms["damp"], arms[other]
    rows = ["| severity | " + f"{base[0].label} | {damp[0].label} | difference |", "|---|---|---|---|"]
    lower = beyond = 0
    for s in range(6):
        d = [severity_errors(r)[s] for r in damp if s in severity_errors(r)]
        b = [severity_errors(r)[s] for r in base if s in severity_errors(r)]
        if not d or not b:
            continue
        (dm, ds), (bm, bs) = _stats(d), _stats(b)
        if s > 0:
            lower += dm < bm
            beyond += bm - dm > ds + bs
        rows.append(f"| {'clean' if s == 0 else s} | {_pm(b)} | {_pm(d)} | {dm - bm:+.2f} |")
    clean_ratio = _stats([r.results['clean']['error'] for r in damp])[0] / \
        _stats([r.results['clean']['error'] for r in base])[0]
    equal_clean = abs(clean_ratio - 1) <= CLEAN_RATIO_TOLERANCE
    verdict = ("reproduced" if lower == 5 and equal_clean else
               "partly reproduced" if lower > 0 else "not reproduced")
    text = (f"DAMP's mean error is lower than {base[0].label}'s at {lower} of 5 severities ({beyond} of them by "
            f"more than the two seed standard deviations added), with a clean-error ratio of {clean_ratio:.3f} "
            f"({'within' if equal_clean else 'outside'} the ±{CLEAN_RATIO_TOLERANCE:.2f} taken as about equal). "
            f"Mean corruption error: {_pm([_corruption_mean(r) for r in base])} → "
            f"{_pm([_corruption_mean(r) for r in damp])}. Rule: reproduced when lower at all 5 severities at about "
            "equal clean error; partly when lower at some severities, or at all 5 with a clean error that is not "
            "about equal; not reproduced when lower at none.")
    return f"**{verdict.capitalize()}.** {text}\n\n" + "\n".join(rows)


def claim_additive(arms: dict[str, list[Run]], grid: list[Run]) -> str:
    """Claim 3: multiplicative (DAMP) beats additive (DAAP) noise; DAAP is only slightly better than SGD."""
    damp, daap, sgd = (arms[a] for a in ("damp", "daap", "sgd"))
    means = {a: _stats([_corruption_mean(r) for r in arms[a]])[0] for a in ("damp", "daap", "sgd")}
    by_point: dict[tuple[str, str], list[float]] = {}  # (arm, label) -> corruption errors of its seeds
    for run in grid:
        if arm(run) in ("damp", "daap"):
            by_point.setdefault((arm(run), run.label), []).append(_corruption_mean(run))
    point_means = {key: statistics.fmean(v) for key, v in sorted(by_point.items())}
    points = "; ".join(f"{label} {m:.2f}" for (_, label), m in point_means.items())
    best = {a: min((m for (a2, _), m in point_means.items() if a2 == a), default=float("inf"))
            for a in ("damp", "daap")}
    verdict = "reproduced" if means["damp"] < means["daap"] and best["damp"] < best["daap"] else \
        "partly reproduced" if means["damp"] < means["daap"] or best["damp"] < best["daap"] else "not reproduced"
    return (f"**{verdict.capitalize()}.** Mean corruption error of the selected points: {damp[0].label} "
            f"{_pm([_corruption_mean(r) for r in damp])}, {daap[0].label} {_pm([_corruption_mean(r) for r in daap])}, "
            f"{sgd[0].label} {_pm([_corruption_mean(r) for r in sgd])}; DAAP − SGD = "
            f"{means['daap'] - means['sgd']:+.2f}, DAMP − SGD = {means['damp'] - means['sgd']:+.2f}. "
            "Every grid point "
            f"(all seeds it ran): {points or 'none'}. Rule: reproduced when DAMP is lower both at the selected points "
            "and at the best grid point of each; partly when at one of the two.")


def claim_cost(arms: dict[str, list[Run]], ratios: dict[str, float]) -> str:
    """Claims 4 and 5: DAMP beats SAM on corrupted data at about half the cost; ASAM is strong at 2x cost."""
    rows = ["| method | mean corruption error % | clean error % | time / SGD | reduction vs SGD (points) "
            "| reduction per SGD-time |", "|---|---|---|---|---|---|"]
    sgd = _stats([_corruption_mean(r) for r in arms["sgd"]])[0]
    for a in ("sgd", "damp", "sam", "asam"):
        if a not in arms:
            continue
        c = [_corruption_mean(r) for r in arms[a]]
        ratio, reduction = ratios.get(a), sgd - _stats(c)[0]
        per_time = "n/a" if ratio is None else f"{reduction / ratio:.2f}"
        rows.append(f"| {arms[a][0].label} | {_pm(c)} | {_pm([r.results['clean']['error'] for r in arms[a]])} | "
                    f"{'n/a' if ratio is None else f'{ratio:.2f}'} | {reduction:+.2f} | {per_time} |")
    damp, sam = (_stats([_corruption_mean(r) for r in arms[a]])[0] for a in ("damp", "sam"))
    asam = _stats([_corruption_mean(r) for r in arms["asam"]])[0] if "asam" in arms else None
    cheaper = ratios.get("sam") is not None and ratios.get("damp") is not None and ratios["damp"] < ratios["sam"]
    verdict = "reproduced" if damp < sam and cheaper else "partly reproduced" if damp < sam or cheaper \
        else "not reproduced"
    text = (f"DAMP's mean corruption error is {damp:.2f} against SAM's {sam:.2f}, at "
            f"{ratios.get('damp', float('nan')):.2f}× and {ratios.get('sam', float('nan')):.2f}× "
            "SGD's training time. "
            "Rule: reproduced when DAMP has the lower corruption error and the lower cost; partly when one of them. "
            "The last column divides the reduction by the time ratio: the gain per SGD-length of training. "
            + ("" if asam is None else
               f"ASAM's corruption error is {asam:.2f} at {ratios.get('asam', float('nan')):.2f}× SGD's time, "
               f"{'lower' if asam < damp else 'not lower'} than DAMP's (the paper finds ASAM strongest on CIFAR at "
               "twice the cost). ")
            + "Times are wall-clock on the machine the suite ran on (the table above); `damp bench` measures "
            "step-time ratios in isolation.")
    return f"**{verdict.capitalize()}.** {text}\n\n" + "\n".join(rows)


def claim_breadth(groups: dict[str, list[Run]], arms: dict[str, list[Run]], dataset: str | None) -> str:
    """Claim 2: training on one corruption helps it but costs clean accuracy and other corruptions;
    DAMP improves (nearly) every corruption at a clean ratio of about 1."""
    singles = [a for a in arms if " + " in a]
    baseline = arms["sgd"][0].label
    columns, rows = corruption_error_ratios(groups, baseline, dataset)
    corr = [c for c in columns if c not in ("none", "avg")]

    def describe(a: str) -> tuple[str, int, float]:
        ratios = dict(zip(columns, rows[arms[a][0].label]))
        improved = sum(ratios[c] < 1 for c in corr)
        worst = max(corr, key=lambda c: ratios[c])
        return (f"{arms[a][0].label}: below 1 on {improved} of {len(corr)} corruptions, worst {worst} "
                f"{ratios[worst]:.2f}, avg {ratios['avg']:.2f}, clean {ratios['none']:.2f}", improved, ratios["none"])

    damp_text, damp_improved, damp_clean = describe("damp")
    others = [describe(a) for a in singles]
    broader = all(damp_improved > n for _, n, _ in others)
    cleaner = all(damp_clean < c for _, _, c in others)
    verdict = "reproduced" if others and broader and cleaner else "partly reproduced" if broader or cleaner \
        else "not reproduced"
    return (f"**{verdict.capitalize()}.** Corruption-error ratios to {baseline} (heatmap above): {damp_text}; "
            + "; ".join(t for t, _, _ in others) + ". Rule: reproduced when DAMP is below 1 on more corruptions "
            "than every single-corruption arm and has the lower clean ratio; partly when one of the two.")


def write_results(paths: list[str | Path], out: str | Path, *, title: str, command: str,
                  regime: str | None = None, others: dict[str, str | Path] | None = None,
                  skip_unfinished: bool = False) -> Path:
    """Write ``out/RESULTS.md`` and its figures from sweep and run directories; returns its path.

    With ``regime`` (this suite's name) and ``others`` ({name: directory of another suite's sweeps}),
    a suite that follows the protocol also gets "The two regimes" (:mod:`damp.regimes`). With
    ``skip_unfinished``, sweeps still running are left out and named at the top.
    """
    inputs = load_inputs(paths, skip_unfinished=skip_unfinished)
    inputs.selected.sort(key=_arm_order)
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
    lines += _paired_sections(arms, inputs, protocol, regime, others)
    lines += _ratio_figures(inputs, arms, out, protocol)
    timing, ratios = timing_table(arms)
    lines += ["## Wall-clock per method", "", "Training loop only (evaluation excluded), runs one after another "
              "on the machine the suite ran on. Other work may have shared that machine; `damp bench` measures "
              "step-time ratios in isolation.", "", timing, ""]
    lines += _tuning_sections(inputs, arms, out)
    lines += ["## The paper's claims at this scale", ""] + _claims(groups, arms, ratios, inputs.tuning, dataset,
                                                                  protocol)
    path = out / "RESULTS.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _paired_sections(arms: dict[str, list[Run]], inputs: SuiteInputs, protocol: bool, regime: str | None,
                     others: dict[str, str | Path] | None) -> list[str]:
    """The paired differences to SGD; under the protocol, its verdicts and "The two regimes"."""
    if "sgd" not in arms or len(arms["sgd"]) < 2:
        return []
    table, _ = paired_table(arms)
    lines = ["## Paired differences to SGD", "", "Arm − SGD in pt of top-1 error, paired by seed (the same seed "
             "gives the same initial weights and data order), with 95 % t-intervals; severity p-values are "
             f"Holm-adjusted across the severities; clean equivalence is TOST within ±{EQUIVALENCE_MARGIN:g} "
             "pt (docs/evidence.md). Every run's numbers: `runs.csv`.", "", table, ""]
    if len(arms.get("damp", [])) >= 2 and len(arms) > 2:  # every other arm against DAMP itself
        table, _ = paired_table(arms, baseline="damp")
        lines += ["## Paired differences to DAMP", "", "Arm − DAMP, paired and tested as above: the baselines "
                  "and the methods beyond the paper against DAMP itself.", "", table, ""]
    if protocol:
        lines += protocol_section(arms, inputs.tuning, arm)
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


ARM_ORDER = ("sgd", "dropout", "damp", "daap", "sam", "asam", "rwp", "mrwp", "sgd + augmix", "damp + augmix")


def _arm_order(run: Run) -> tuple[int, str, int]:
    """The paper's order (SGD, Dropout, DAMP, DAAP, SAM, ASAM, then single-corruption arms), then seed."""
    name = arm(run)
    return (ARM_ORDER.index(name) if name in ARM_ORDER else len(ARM_ORDER), name, run.seed)


def _unfinished(directories: list[str]) -> list[str]:
    """A warning naming the sweeps that had not finished, or not started, when the report was written."""
    if not directories:
        return []
    names = ", ".join(Path(d).name + ("" if Path(d).exists() else " (not started)") for d in directories)
    return [f"**Incomplete.** These sweeps had not finished and are left out: {names}. Every section below reads "
            "the finished ones only; run the suite's command again to finish them and regenerate this file.", ""]


def _headline(arms: dict[str, list[Run]]) -> list[str]:
    """DAMP against SGD in one sentence: mean corruption error and clean error, mean ± std over seeds."""
    if "damp" not in arms or "sgd" not in arms:
        return []
    damp, sgd = arms["damp"], arms["sgd"]
    return [f"**Headline.** {damp[0].label} vs {sgd[0].label} ({len(damp)} and {len(sgd)} seeds): mean corruption "
            f"error {_pm([_corruption_mean(r) for r in damp])} vs {_pm([_corruption_mean(r) for r in sgd])} %, clean "
            f"error {_pm([r.results['clean']['error'] for r in damp])} vs "
            f"{_pm([r.results['clean']['error'] for r in sgd])} %.", ""]


def _claims(groups, arms, ratios, tuning, dataset, protocol: bool = False) -> list[str]:
    """One section per paper claim by the mean-based rules; under the protocol, only the claims its
    verdicts do not cover (claims 1 and 3 are judged there, with paired statistics)."""
    claims = [  # (heading, the arms it needs, the paragraph)
        ("DAMP vs SGD per severity (claim 1)", ("sgd", "damp"), lambda: claim_severity(arms, "sgd")),
        ("DAMP vs Dropout per severity (claim 1)", ("dropout", "damp"), lambda: claim_severity(arms, "dropout")),
        ("Single-corruption training vs DAMP in breadth (claim 2)", ("sgd", "damp"),
         lambda: claim_breadth(groups, arms, dataset) if any(" + " in a for a in arms)
         else "Not assessed: no single-corruption runs."),
        ("DAMP vs DAAP (claim 3)", ("sgd", "damp", "daap"),
         lambda: claim_additive(arms, [*tuning, *arms["damp"], *arms["daap"]])),
        ("DAMP vs SAM/ASAM per unit of training time (claims 4, 5)", ("sgd", "damp", "sam"),
         lambda: claim_cost(arms, ratios)),
    ]
    sections = []
    if protocol:
        claims = [c for c in claims if "claim 1" not in c[0] and "claim 3" not in c[0]]
        sections += ["Claims 1 and 3 are judged above, by the protocol's paired rules. The sections below use the "
                     "older mean-based rules, for the claims the protocol does not cover.", ""]
    for heading, required, paragraph in claims:
        missing = [a for a in required if a not in arms]
        body = f"Not assessed: no {', '.join(missing)} runs." if missing else paragraph()
        sections += [f"### {heading}", "", body, ""]
    return sections


def _setup(runs: list[Run]) -> str:
    """One sentence naming what was trained, from the runs' configs."""
    cfg = runs[0].config
    d, m, t = cfg.get("data") or {}, cfg.get("model") or {}, cfg.get("trainer") or {}
    sub_batches = sorted({(r.config.get("method") or {}).get("num_perturbations") for r in runs
                          if methods.canonical_name((r.config.get("method") or {}).get("name", "sgd")) != "sgd"})
    return (f"Setup: {d.get('name')} ({d.get('max_train_images') or 'all'} training images, "
            f"{d.get('holdout', 0):.0%} of them held out for tuning; {d.get('max_test_images') or 'all'} test "
            f"images), {m.get('name')} width {m.get('width')}, {t.get('epochs')} epochs, batch "
            f"{d.get('batch_size')}" + (f", M = {', '.join(map(str, sub_batches))}" if sub_batches else "") + ".")
