"""RESULTS.md (`damp report --claims`) from synthetic sweeps: selected points vs tuning points, the
wall-clock table, and verdicts that follow the measured numbers in both directions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from damp.cli import main
from damp.corruptions import names
from damp.suite_inputs import load_inputs


def _run(path: Path, cfg: dict, clean: float, corrupted: float, seconds: float, single: str | None = None) -> None:
    """A finished run: error ``corrupted + s`` at severity s (``single`` gets half of it)."""
    path.mkdir(parents=True)
    per = {n: {str(s): {"error": (corrupted + s) / (2 if n == single else 1)} for s in range(1, 6)}
           for n in names("all")}
    severity = {str(s): sum(p[str(s)]["error"] for p in per.values()) / len(per) for s in range(1, 6)}
    results = {"clean": {"error": clean}, "corruptions": per, "holdout": {"error": clean},
               "summary": {"mean_corruption_error": sum(severity.values()) / 5, "severity_error": severity},
               "meta": {"train_seconds": seconds, "dataset": "fashion_mnist"}}
    (path / "results.json").write_text(json.dumps(results))
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))


def _sweep(root: Path, method: str, key: str | None, points: dict, clean, corrupted, seconds, single=None,
           augmix: bool = False) -> Path:
    """A finished `damp sweep` directory: ``points`` maps a grid value (or None) to its number of seeds; the
    point with the most seeds is the selected one."""
    out = root / method
    rows, chosen = [], max(points, key=points.get)
    for value, seeds in points.items():
        runs = []
        for seed in range(seeds):
            name = (f"{key.split('.')[-1]}={value}__" if key else "") + f"seed={seed}"
            m = {"name": method.split("_")[0], "num_perturbations": 8}
            if key:
                m[key.split(".")[-1]] = value
            data = {"name": "fashion_mnist", "train_corruption": single, "holdout": 0.1, "batch_size": 128,
                    "augmix": augmix, "augmix_jsd": augmix}
            _run(out / name, {"data": data, "model": {"name": "small_cnn", "width": 16,
                              "dropout": 0.1 if method == "dropout" else 0.0},
                              "method": m, "trainer": {"epochs": 5}, "seed": seed},
                 clean + seed * 0.1, corrupted + seed * 0.1 + (0 if value == chosen else 5), seconds, single)
            holdout = clean + seed * 0.1 + (0 if value == chosen else 1)
            runs.append({"seed": seed, "dir": name, "holdout_error": holdout})
        point = {key: str(value)} if key else {}
        rows.append({"point": point, "label": method, "method": method.split("_")[0], "runs": runs,
                     "holdout_error": clean + (0 if value == chosen else 1)})
    (out / "sweep.yaml").write_text("config: x\n")
    selection = {method: {"point": {key: str(chosen)} if key else {}, "label": method, "holdout_error": clean}}
    (out / "summary.json").write_text(json.dumps({"grid": {}, "points": rows, "selection": selection,
                                                  "tuning_seeds": 1}))
    return out


def _suite(root: Path, damp_corrupted: float) -> list[str]:
    return [str(p) for p in (
        _sweep(root, "sgd", None, {None: 3}, 10.0, 30.0, 100.0),
        _sweep(root, "dropout", None, {None: 3}, 10.0, 29.5, 100.0),
        _sweep(root, "damp", "method.std", {0.1: 3, 0.3: 1}, 10.1, damp_corrupted, 110.0),
        _sweep(root, "daap", "method.std", {0.01: 3, 0.04: 1}, 10.0, 29.8, 110.0),
        _sweep(root, "sam", "method.rho", {0.05: 3}, 10.0, 28.0, 230.0),
        _sweep(root, "asam", "method.rho", {1.0: 3}, 9.9, 27.0, 240.0),
        _sweep(root, "sgd_zoom", None, {None: 3}, 12.0, 30.0, 105.0, single="zoom_blur"))]


def _section(text: str, heading: str) -> str:
    return text.split(f"### {heading}")[1].split("###")[0]


def test_sweeps_stand_for_their_selected_points(tmp_path):
    inputs = load_inputs(_suite(tmp_path, 25.0))
    damp = [r for r in inputs.selected if r.label.startswith("damp")]
    assert len(damp) == 3 and {r.label for r in damp} == {"damp σ=0.1"}
    assert [r.label for r in inputs.tuning] == ["damp σ=0.3", "daap σ=0.04"]
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "sweep.yaml").write_text("config: x\n")
    with pytest.raises(FileNotFoundError, match="not finished"):
        load_inputs([unfinished])


@pytest.mark.parametrize("damp_corrupted,verdict", [(25.0, "Reproduced"), (35.0, "Not reproduced")])
def test_results_md_verdicts_follow_the_numbers(tmp_path, damp_corrupted, verdict):
    out = tmp_path / "results"
    assert main(["report", *_suite(tmp_path / "suite", damp_corrupted), "--out", str(out), "--claims",
                 "--title", "T", "--command", "bash suite.sh"]) == 0
    text = (out / "RESULTS.md").read_text()
    assert text.startswith("# T") and "`bash suite.sh`" in text
    for figure in ("severity_curves.png", "heatmap.png", "damp_vs_daap.png"):
        assert (out / figure).is_file() and figure in text
    claim1 = _section(text, "DAMP vs SGD per severity (claim 1)")
    assert claim1.strip().startswith(f"**{verdict}.**")
    # clean 10.1 vs 10.0 (+ seed offsets) is a ratio of 1.01: about equal
    assert re.search(r"clean-error ratio of 1\.01\d", claim1)
    assert "| 3 | 33.10 ± 0.10 |" in claim1  # SGD at severity 3, mean ± std over 3 seeds
    # Wall-clock: the mean of the seeds, and the ratio to SGD's time
    assert "| sam ρ=0.05 | 230.00 ± 0.00 | 2.30 |" in text
    cost = _section(text, "DAMP vs SAM/ASAM per unit of training time (claims 4, 5)")
    assert "1.10× and 2.30× SGD's training time" in cost
    breadth = _section(text, "Single-corruption training vs DAMP in breadth (claim 2)")
    assert "sgd + zoom_blur: below 1 on 1 of 19 corruptions" in breadth
    tuning = text.split("## Tuning on the hold-out split")[1]
    assert "| damp | method.std=0.3 | 1 | 11.10 | n/a |  |" in tuning
    assert "| damp | method.std=0.1 | 3 | 10.10 | n/a | yes |" in tuning
    if damp_corrupted == 25.0:  # 5 points below SGD at 1.1x its time: 5 / 1.1 per SGD-length of training
        assert "| damp σ=0.1 | 28.10 ± 0.10 | 10.20 ± 0.10 | 1.10 | +5.00 | 4.55 |" in cost


def test_missing_arms_are_named_not_assessed(tmp_path):
    paths = _suite(tmp_path / "suite", 25.0)
    kept = [p for p in paths if Path(p).name in ("sgd", "damp")]
    assert main(["report", *kept, "--out", str(tmp_path / "r"), "--claims"]) == 0
    text = (tmp_path / "r" / "RESULTS.md").read_text()
    assert "Not assessed: no daap runs." in text and "Not assessed: no sam runs." in text


def test_augmix_arms_are_not_single_corruption_arms(tmp_path):
    """Claim 2 compares DAMP with training on one test corruption; an AugMix arm is not one."""
    suite = _suite(tmp_path / "suite", 25.0)
    paths = [p for p in suite if Path(p).name in ("sgd", "damp")]
    augmix = str(_sweep(tmp_path / "suite", "sgd_augmix", None, {None: 3}, 9.0, 20.0, 300.0, augmix=True))
    assert main(["report", *paths, augmix, "--out", str(tmp_path / "r"), "--claims"]) == 0
    breadth = _section((tmp_path / "r" / "RESULTS.md").read_text(),
                       "Single-corruption training vs DAMP in breadth (claim 2)")
    assert breadth.strip() == "Not assessed: no single-corruption runs."
    zoom = next(p for p in suite if Path(p).name == "sgd_zoom")
    assert main(["report", *paths, augmix, zoom, "--out", str(tmp_path / "r2"), "--claims"]) == 0
    breadth = _section((tmp_path / "r2" / "RESULTS.md").read_text(),
                       "Single-corruption training vs DAMP in breadth (claim 2)")
    assert "sgd + zoom_blur: below 1" in breadth and "augmix" not in breadth


def test_damp_plus_augmix_is_paired_with_augmix_alone_only_when_both_arms_ran(tmp_path):
    """The combination's own question (paper §6): what DAMP's noise adds to AugMix, paired by seed."""
    paths = [p for p in _suite(tmp_path / "suite", 25.0) if Path(p).name in ("sgd", "damp")]
    augmix = str(_sweep(tmp_path / "suite", "sgd_augmix", None, {None: 3}, 9.0, 20.0, 300.0, augmix=True))
    both = str(_sweep(tmp_path / "suite", "damp_augmix", "method.std", {0.1: 3, 0.2: 1}, 9.2, 19.0, 400.0,
                      augmix=True))
    assert main(["report", *paths, augmix, both, "--out", str(tmp_path / "r"), "--claims"]) == 0
    text = (tmp_path / "r" / "RESULTS.md").read_text()
    table = text.split("## Paired differences to AugMix")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| arm |")]
    assert len(rows) == 1 and rows[0].startswith("| damp + augmix | 3 | +0.20 [+0.20, +0.20] | yes")
    assert rows[0].split(" | ")[4] == "-1.00 [-1.00, -1.00]" and rows[0].count("-1.00 [-1.00, -1.00]") == 6
    assert main(["report", *paths, augmix, "--out", str(tmp_path / "alone"), "--claims"]) == 0
    assert "Paired differences to AugMix" not in (tmp_path / "alone" / "RESULTS.md").read_text()


def test_paired_differences_and_runs_csv(tmp_path):
    import csv

    out = tmp_path / "results"
    assert main(["report", *_suite(tmp_path / "suite", 25.0), "--out", str(out), "--claims"]) == 0
    text = (out / "RESULTS.md").read_text()
    table = text.split("## Paired differences to SGD")[1].split("##")[0]
    damp_row = next(line for line in table.splitlines() if line.startswith("| damp |"))
    # Same offsets per seed in both arms: the differences are exact (+0.10 clean, -5.00 at every severity,
    # so -5.00 in the mean corruption error too, the column after TOST's).
    assert "| 3 | +0.10 [+0.10, +0.10] | yes" in damp_row and damp_row.count("-5.00 [-5.00, -5.00]") == 6
    assert damp_row.split(" | ")[4] == "-5.00 [-5.00, -5.00]"
    header = next(line for line in table.splitlines() if line.startswith("| arm |"))
    assert header.split(" | ")[4] == "mean corr. Δ [95 % CI]"
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert len(rows) == 21 and {r["arm"] for r in rows} >= {"sgd", "damp", "dropout", "sgd + zoom_blur"}
    sgd = [r for r in rows if r["arm"] == "sgd"]
    assert [float(r["clean_error"]) for r in sgd] == pytest.approx([10.0, 10.1, 10.2])


def test_runs_csv_carries_every_hyperparameter_and_every_corruption_severity(tmp_path):
    import csv
    import json

    from damp.corruptions import SEVERITIES

    out = tmp_path / "results"
    assert main(["report", *_suite(tmp_path / "suite", 25.0), "--out", str(out), "--claims"]) == 0
    rows = list(csv.DictReader((out / "runs.csv").open()))
    damp = next(r for r in rows if r["arm"] == "damp")
    assert damp["method"] == "damp"
    assert json.loads(damp["hyperparameters"])["method"]["std"] == pytest.approx(0.1)
    run = json.loads((Path(damp["run"]) / "results.json").read_text())
    for name in names():
        for s in SEVERITIES:
            expected = run["corruptions"].get(name, {}).get(str(s), {}).get("error")
            got = damp[f"{name}_{s}_error"]
            assert (got == "" if expected is None else float(got) == pytest.approx(expected)), (name, s)
    assert any(damp[f"{name}_5_error"] for name in names())  # the fixture's runs measured corruptions
    assert damp["clean_ece"] == "" and damp["fgsm"] == ""  # not measured by the fixture: empty, not 0


def test_unfinished_sweeps_stop_the_report_unless_skipped_and_then_are_named(tmp_path, capsys):
    suite = _suite(tmp_path / "suite", 25.0)
    running = tmp_path / "suite" / "rwp"
    running.mkdir()
    (running / "sweep.yaml").write_text("config: x\n")  # started, no summary.json yet
    out = tmp_path / "results"
    assert main(["report", *suite, str(running), "--out", str(out), "--claims"]) == 2
    assert "not finished" in capsys.readouterr().err and not (out / "RESULTS.md").exists()
    assert main(["report", *suite, str(running), "--out", str(out), "--claims", "--skip-unfinished"]) == 0
    text = (out / "RESULTS.md").read_text()
    assert "**Incomplete.**" in text and "left out: rwp." in text
    to_damp = text.split("## Paired differences to DAMP")[1].split("\n## ")[0]
    assert "| sam | 3 |" in to_damp and "| sgd | 3 |" in to_damp and "| damp |" not in to_damp
    assert "Generated by `damp report" in text and "--skip-unfinished`" in text  # the command that made it
    not_started = tmp_path / "suite" / "augmix"  # a part the suite has not reached: no directory yet
    assert main(["report", *suite, str(not_started), "--out", str(out), "--claims", "--skip-unfinished"]) == 0
    assert "left out: augmix (not started)." in (out / "RESULTS.md").read_text()
    assert main(["report", *suite, "--out", str(tmp_path / "complete"), "--claims"]) == 0
    assert "Incomplete" not in (tmp_path / "complete" / "RESULTS.md").read_text()
    assert main(["report", *suite, str(running), "--out", str(tmp_path / "plain"), "--skip-unfinished"]) == 0
    assert "left out, not finished" in capsys.readouterr().err


def test_a_selection_still_at_the_grid_edge_is_flagged_in_the_tuning_table(tmp_path):
    suite = _suite(tmp_path / "suite", 25.0)
    summary_file = tmp_path / "suite" / "damp" / "summary.json"
    summary = json.loads(summary_file.read_text())
    summary_file.write_text(json.dumps({**summary, "still_at_edge": "damp selected 0.1, the lower edge"}))
    out = tmp_path / "results"
    assert main(["report", *suite, "--out", str(out), "--claims"]) == 0
    tuning = (out / "RESULTS.md").read_text().split("## Tuning on the hold-out split")[1].split("\n## ")[0]
    assert "| damp | method.std=0.1 | 3 |" in tuning and "| yes, still at the grid's edge |" in tuning
    assert "| daap | method.std=0.01 | 3 |" in tuning and tuning.count("still at the grid's edge") == 1


def _bench(path: Path, rows: dict[str, tuple[dict, int, dict[str, float]]]) -> str:
    """A `damp bench --out` file: {row name: (model kwargs, batch, {method: ratio to SGD})}."""
    models = {name: {"model": name.split("@")[0], "model_kwargs": kwargs, "batch": batch, "num_perturbations": 8,
                     "noise_floor": 1.05, "step_time_ratio": ratios} for name, (kwargs, batch, ratios) in rows.items()}
    path.write_text(json.dumps({"device": "cpu", "models": models}))
    return str(path)


def test_bench_ratios_of_the_suites_model_sit_beside_the_wall_clock(tmp_path, capsys):
    suite = _suite(tmp_path / "suite", 25.0)  # small_cnn width 16, batch 128, M = 8
    rwp = _sweep(tmp_path / "suite", "rwp", "method.std", {0.01: 3}, 10.0, 29.0, 120.0)
    for cfg_file in rwp.glob("*/config.yaml"):  # an arm the bench does not time, with another M
        cfg = yaml.safe_load(cfg_file.read_text())
        cfg["method"]["num_perturbations"] = 1
        cfg_file.write_text(yaml.safe_dump(cfg))
    suite.append(str(rwp))
    ratios = {"damp": 1.31, "daap": 1.3, "sam": 2.5, "asam": 2.6}
    first = _bench(tmp_path / "a.json", {"small_cnn@32": ({"width": 32}, 128, {"damp": 9.0}),
                                         "small_cnn": ({"width": 16}, 128, ratios),
                                         "resnet8": ({"width": 16}, 128, {"damp": 9.0})})
    second = _bench(tmp_path / "b.json", {"small_cnn": ({"width": 16}, 128, {**ratios, "damp": 1.27})})
    other_batch = _bench(tmp_path / "c.json", {"small_cnn": ({"width": 16}, 64, {"damp": 9.0})})
    out = tmp_path / "results"
    assert main(["report", *suite, "--out", str(out), "--claims", "--bench", first, "--bench", second,
                 "--bench", other_batch]) == 0
    text = (out / "RESULTS.md").read_text()
    wall_clock = text.split("## Wall-clock per method")[1].split("\n## ")[0]
    assert f"| {first} | 1.05 | 1.31 | 1.30 | 2.50 | 2.60 |" in wall_clock
    assert f"| {second} | 1.05 | 1.27 | 1.30 | 2.50 | 2.60 |" in wall_clock
    assert "9.00" not in wall_clock and f"{other_batch} has no row for small_cnn" in wall_clock
    cost = _section(text, "DAMP vs SAM/ASAM per unit of training time (claims 4, 5)")
    assert "In isolation (`damp bench`, 2 runs" in cost and "DAMP/SGD 1.27-1.31, SAM/SGD 2.50, ASAM/SGD 2.60." in cost
    assert f"--bench {first} --bench {second}" in text  # the command that regenerates it names the files
    assert main(["report", *suite, "--out", str(tmp_path / "none"), "--claims"]) == 0
    plain = (tmp_path / "none" / "RESULTS.md").read_text()
    assert "In isolation" not in plain and "`damp bench` file" not in plain

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["report", *suite, "--out", str(tmp_path / "x"), "--claims", "--bench", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"--bench {broken}: not a `damp bench` JSON" in err and not (tmp_path / "x" / "RESULTS.md").exists()
    assert main(["report", *suite, "--out", str(tmp_path / "y"), "--bench", first]) == 2
    assert "--bench needs --claims" in capsys.readouterr().err


def test_the_setup_sentence_names_which_methods_use_which_m():
    from damp.evidence import _setup
    from damp.report import Run

    def run(method: dict) -> Run:
        config = {"data": {"name": "fashion_mnist", "batch_size": 128}, "model": {"name": "resnet8", "width": 32},
                  "trainer": {"epochs": 100}, "method": method}
        return Run(Path("."), method.get("name", "sgd"), 1, {}, "fashion_mnist", config)
    runs = [run({"name": "sgd", "num_perturbations": 1}), run({"name": "damp", "num_perturbations": 8}),
            run({"name": "sam", "num_perturbations": 8}), run({"name": "rwp", "num_perturbations": 1}),
            run({"name": "damp", "num_perturbations": 8})]
    assert _setup(runs).endswith("batch 128, M = 8 (damp, sam); 1 (rwp).")
    assert _setup(runs[:1]).endswith("batch 128.")  # SGD alone has no sub-batches


def test_the_mean_corruption_column_pairs_by_seed_and_says_na_where_a_run_did_not_measure_it():
    from damp.paired import paired_table
    from damp.report import Run

    def run(arm: str, seed: int, clean: float, corrupted: float, mean: bool = True) -> Run:
        summary = {"severity_error": {str(s): corrupted + s for s in range(1, 6)}}
        if mean:
            summary["mean_corruption_error"] = corrupted + 3
        return Run(Path(arm), arm, seed, {"clean": {"error": clean}, "summary": summary})

    arms = {"sgd": [run("sgd", s, 10.0, 20.0 + s) for s in (1, 2, 3)],
            "damp": [run("damp", s, 10.0, 18.0 + 2 * s) for s in (1, 2, 3, 4)],  # seed 4 has no pair
            "old": [run("old", s, 10.0, 19.0, mean=False) for s in (1, 2, 3)]}
    table, numbers = paired_table(arms)
    # damp - sgd per seed: -1, 0, +1 -> mean 0, and the interval is the t-interval of those three
    assert numbers["damp"]["corruption"].n == 3 and numbers["damp"]["corruption"].mean == pytest.approx(0.0)
    assert numbers["damp"]["corruption"].high == pytest.approx(-numbers["damp"]["corruption"].low)
    assert numbers["damp"]["corruption"].high == pytest.approx(4.303 / 3 ** 0.5, rel=1e-3)
    old = next(line for line in table.splitlines() if line.startswith("| old |"))
    assert old.split(" | ")[4] == "n/a" and numbers["old"]["corruption"] is None
