"""Run records and the tables that compare them: a run's results, its label, groups of seeds, the
comparison table and the corruption-error ratios (figures: :mod:`damp.report_figures`; report.md:
:mod:`damp.report_markdown`).

Runs with the same method and hyperparameters (differing only by seed) are grouped and shown as
mean ± std. Reads each run's ``evaluation.json`` (from `damp evaluate`) or else its ``results.json``.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from damp import methods
from damp.config import flat_keys
from damp.corruptions import CANONICAL_NAMES
from damp.corruptions import names as corruption_names


@dataclass
class Run:
    path: Path
    label: str
    seed: int
    results: dict
    dataset: str | None = None  # data.name of the run's config (or results meta)
    config: dict = field(default_factory=dict)  # the run's config.yaml ({} when absent)


def paper_average_columns(dataset: str | None) -> list[str]:
    """The corruption columns the paper's heatmap "Avg" averages together with "none" (clean): the 15
    common corruptions (Fig. 3 CIFAR-100, Fig. 5 CIFAR-10); Tiny-ImageNet has 14, no glass_blur (Fig. 6).
    Other datasets follow the CIFAR figures."""
    common = corruption_names("common")
    return [c for c in common if c != "glass_blur"] if dataset == "tiny_imagenet" else common


SYMBOLS = {"std": "σ", "rho": "ρ", "eta": "η"}


def run_label(cfg: dict) -> str:
    """A readable name for a run's method and hyperparameters, e.g. "damp σ=0.2", "sgd + zoom_blur"."""
    method, model, data = (cfg.get(key) or {} for key in ("method", "model", "data"))
    name = method.get("name", "sgd")
    if methods.canonical_name(name) == "sgd" and (name != "sgd" or (model.get("dropout") or 0) > 0):
        label = f"dropout p={model.get('dropout') or 0:g}"
    else:
        shown = [k for k in methods.hyperparameter_names(name) if k not in ("num_perturbations", "seed")]
        values = [f"{SYMBOLS.get(k, k)}={method[k]:g}" for k in shown if isinstance(method.get(k), (int, float))]
        label = " ".join([name, *values[:1]])  # the method's main hyperparameter (std or rho)
    if data.get("train_corruption"):
        label += f" + {data['train_corruption']}"
    if data.get("augmix"):
        label += " + augmix" + (" (JSD)" if data.get("augmix_jsd") else "")
    return label


def load_run(path: str | Path) -> Run:
    """One run directory: its config (config.yaml) and results (evaluation.json or results.json)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run directory")
    results_file = next((path / f for f in ("evaluation.json", "results.json") if (path / f).is_file()), None)
    if results_file is None:
        raise FileNotFoundError(f"{path}: no evaluation.json or results.json (train or evaluate the run first)")
    try:
        results = json.loads(results_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{results_file}: not valid JSON ({err})") from None
    cfg = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else {}
    cfg = cfg if isinstance(cfg, dict) else {}
    clean = results.get("clean") if isinstance(results, dict) else None
    if not isinstance(clean, dict) or not isinstance(clean.get("error"), (int, float)):
        raise ValueError(f"{results_file}: not a damp results file (no clean error)")
    meta = results.get("meta") if isinstance(results.get("meta"), dict) else {}
    dataset = (cfg.get("data") or {}).get("name") or meta.get("dataset")
    # An evaluation of a model damp did not train (`damp evaluate --model`) has no method: name it by its model.
    foreign = not cfg and "method" in meta and meta["method"] is None
    label = str(meta.get("model") or path.name) if foreign else run_label(cfg)
    return Run(path, label, int(cfg.get("seed") or 0), results, dataset, cfg)


# Config keys that do not change what a run trains: runs differing only in these (and the seed) are
# seeds of one configuration.
NOT_THE_SETUP = ("seed", "data.root", "data.num_workers", "data.frost_dir", "trainer.device", "trainer.progress",
                 "trainer.tensorboard", "trainer.log_every", "trainer.checkpoint_every", "trainer.checkpoint_minutes",
                 "trainer.metrics_format")


def setup_key(run: Run) -> str:
    """What a run trains (its config without the seed and the keys of :data:`NOT_THE_SETUP`)."""
    if not run.config:
        return f"label:{run.label}"  # an evaluation without config.yaml: its label is all there is
    # each value JSON-encoded too, so that group() can compare list values in sets
    return json.dumps({k: json.dumps(v, sort_keys=True, default=str) for k, v in flat_keys(run.config).items()
                       if k not in NOT_THE_SETUP}, sort_keys=True)


def group(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by what they train (:func:`setup_key`), so only seeds are averaged together.

    A group is named by its label; groups that share a label get the config keys that tell them
    apart, e.g. "damp σ=0.1 (num_perturbations=4)".
    """
    by_setup: dict[str, list[Run]] = {}
    for run in runs:
        by_setup.setdefault(setup_key(run), []).append(run)
    labels: dict[str, list[str]] = {}
    for key, members in by_setup.items():
        labels.setdefault(members[0].label, []).append(key)
    groups: dict[str, list[Run]] = {}
    for label, keys in labels.items():
        flats = {key: json.loads(key) if not key.startswith("label:") else {} for key in keys}
        differing = sorted({k for f in flats.values() for k in f if len({g.get(k) for g in flats.values()}) > 1})
        for key in keys:
            suffix = ", ".join(f"{k.split('.')[-1]}={json.loads(flats[key][k]) if k in flats[key] else 'unset'}"
                               for k in differing)
            groups[f"{label} ({suffix})" if suffix else label] = by_setup[key]
    return groups


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _fmt(values: list[float]) -> str:
    mean, std = _mean_std(values)
    return f"{mean:.2f}" + (f" ± {std:.2f}" if len(values) > 1 else "")


def _severity_means(corruptions: dict) -> dict[str, float]:
    """Per-severity mean error over the corruptions that have it (for results without a summary)."""
    by_severity: dict[str, list[float]] = {}
    for per_severity in corruptions.values():
        for s, metrics in per_severity.items():
            if "error" in metrics:
                by_severity.setdefault(s, []).append(metrics["error"])
    return {s: statistics.fmean(v) for s, v in by_severity.items()}


def severity_errors(run: Run) -> dict[int, float]:
    """{0: clean error, 1..5: mean error over corruptions at that severity} (what the run has)."""
    summary = run.results.get("summary") or {}
    per_severity = summary.get("severity_error") or _severity_means(run.results.get("corruptions") or {})
    return {0: run.results["clean"]["error"], **{int(s): v for s, v in per_severity.items()}}


def _summary(run: Run) -> dict:
    return run.results.get("summary") or {}


def _fgsm(run: Run) -> list[dict]:
    return [row for row in run.results.get("fgsm") or [] if "eps" in row and "error" in row]


def comparison_table(groups: dict[str, list[Run]]) -> str:
    """Markdown table: clean, per-severity error, averages and FGSM, mean ± std over seeds."""
    severities = sorted({s for runs in groups.values() for r in runs for s in severity_errors(r) if s > 0})
    eps = sorted({row["eps"] for runs in groups.values() for r in runs for row in _fgsm(r)})
    has_15 = any("mean_error_15x5" in _summary(r) for rs in groups.values() for r in rs)
    header = ["run", "seeds", "clean"] + [f"sev {s}" for s in severities] + ["corr. avg"]
    header += ["15×5 avg"] if has_15 else []
    header += [f"FGSM {e:.4g}" for e in eps]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, runs in groups.items():
        row = [label, str(len(runs)), _fmt([r.results["clean"]["error"] for r in runs])]
        for s in severities:
            vals = [severity_errors(r)[s] for r in runs if s in severity_errors(r)]
            row.append(_fmt(vals) if vals else "–")
        for key in ["mean_corruption_error"] + (["mean_error_15x5"] if has_15 else []):
            vals = [_summary(r)[key] for r in runs if key in _summary(r)]
            row.append(_fmt(vals) if vals else "–")
        for e in eps:
            vals = [x["error"] for r in runs for x in _fgsm(r) if x["eps"] == e]
            row.append(_fmt(vals) if vals else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _error_sums(runs: list[Run]) -> dict[str, float]:
    """{corruption: seed mean of sum_s E_s} for the corruptions every run has, plus "none" (clean error)."""
    out = {}
    for name in CANONICAL_NAMES:
        per_run = [(r.results.get("corruptions") or {}).get(name) or {} for r in runs]
        if all(per_severity and all("error" in m for m in per_severity.values()) for per_severity in per_run):
            out[name] = statistics.fmean(sum(m["error"] for m in p.values()) for p in per_run)
    out["none"] = statistics.fmean(r.results["clean"]["error"] for r in runs)
    return out


def corruption_error_ratios(groups: dict[str, list[Run]], baseline: str, dataset: str | None = None
                            ) -> tuple[list[str], dict[str, list[float]]]:
    """Paper Figs. 3/5/6: CE_c = sum_s E_{s,c} / sum_s E^baseline_{s,c} per corruption (seed means).

    Columns: the paper's corruption columns for ``dataset`` (:func:`paper_average_columns`) that every
    group has, "none" (clean-error ratio), "avg" (the mean of exactly those columns, as the paper's
    Avg), then any other corruptions present, which "avg" leaves out.
    """
    sums = {label: _error_sums(runs) for label, runs in groups.items()}
    shared = [c for c in sums[baseline] if c != "none" and all(c in s for s in sums.values())]
    averaged = [c for c in shared if c in paper_average_columns(dataset)] + ["none"]
    extra = [c for c in shared if c not in averaged]
    base = sums[baseline]
    rows = {}
    for label, s in sums.items():
        ratio = {c: s[c] / base[c] if base[c] > 0 else float("nan") for c in averaged + extra}
        rows[label] = [ratio[c] for c in averaged] + [statistics.fmean(ratio[c] for c in averaged)] + \
                      [ratio[c] for c in extra]
    return averaged + ["avg"] + extra, rows
