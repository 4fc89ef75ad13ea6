"""`damp report` without training: the paper's heatmap average, Fig. 7 error bars, and results files
that lack optional parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from damp.cli import main
from damp.corruptions import names
from damp.report import Run, corruption_error_ratios, paper_average_columns
from damp.report_figures import damp_vs_daap_bars


def results(clean: float, error_of, severities=(1, 2, 3, 4, 5)) -> dict:
    return {"clean": {"error": clean},
            "corruptions": {n: {str(s): {"error": error_of(n)} for s in severities} for n in names("all")}}


def write_run(path: Path, res: dict, cfg: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(res))
    if cfg is not None:
        (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return path


def test_paper_average_columns():
    assert paper_average_columns("cifar10") == names("common") == paper_average_columns("cifar100")
    tiny = paper_average_columns("tiny_imagenet")
    assert len(tiny) == 14 and "glass_blur" not in tiny  # Fig. 6


@pytest.mark.parametrize("dataset,averaged", [("cifar10", 15), ("cifar100", 15), ("tiny_imagenet", 14)])
def test_heatmap_avg_is_the_papers_columns_plus_clean(dataset, averaged):
    # Baseline 10% everywhere; the other run halves the paper's columns, doubles the rest, same clean error.
    paper = set(paper_average_columns(dataset))
    base = Run(Path("a"), "sgd", 0, results(10.0, lambda n: 10.0), dataset)
    other = Run(Path("b"), "damp σ=0.2", 0, results(10.0, lambda n: 5.0 if n in paper else 20.0), dataset)
    columns, rows = corruption_error_ratios({"sgd": [base], "damp σ=0.2": [other]}, "sgd", dataset)
    avg = columns.index("avg")
    assert columns[avg - 1] == "none" and set(columns[:avg - 1]) == paper
    assert set(columns[avg + 1:]) == set(names("all")) - paper  # shown, but not averaged
    assert rows["damp σ=0.2"][avg] == pytest.approx((averaged * 0.5 + 1.0) / (averaged + 1))
    assert all(v == 2.0 for v in rows["damp σ=0.2"][avg + 1:])
    assert rows["sgd"][avg] == 1.0


def test_report_writes_the_paper_average_for_a_tiny_imagenet_heatmap(tmp_path):
    paper = set(paper_average_columns("tiny_imagenet"))
    sgd = write_run(tmp_path / "sgd", results(40.0, lambda n: 50.0), {"data": {"name": "tiny_imagenet"}})
    damp = write_run(tmp_path / "damp", results(40.0, lambda n: 25.0 if n in paper else 100.0),
                     {"data": {"name": "tiny_imagenet"}, "method": {"name": "damp", "std": 0.2}})
    assert main(["report", str(sgd), str(damp), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "14 of 14 for tiny_imagenet" in text
    row = next(line for line in text.splitlines() if line.startswith("| damp σ=0.2 | 0.50"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[15:17] == ["1.00", f"{(14 * 0.5 + 1) / 15:.2f}"]  # none, avg
    assert cells[17] == "2.00"  # glass_blur, after avg


def _bars_calls(groups, monkeypatch, tmp_path) -> list:
    import matplotlib.axes

    from damp.report_figures import plot_damp_vs_daap

    calls = []
    original = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar",
                        lambda self, *a, **k: calls.append(k.get("yerr")) or original(self, *a, **k))
    plot_damp_vs_daap(groups, tmp_path / "fig7.png")
    return calls


def test_fig7_has_error_bars_only_with_several_seeds(monkeypatch, tmp_path):
    def runs(label, seeds, error):
        return [Run(Path(f"{label}{s}"), label, s, results(error + s, lambda n: error + s)) for s in range(seeds)]

    single = {"sgd": runs("sgd", 1, 10.0), "damp σ=0.2": runs("damp σ=0.2", 1, 8.0),
              "daap σ=0.01": runs("daap σ=0.01", 1, 9.0)}
    assert all(stds is None for _, stds in damp_vs_daap_bars(single).values())
    assert _bars_calls(single, monkeypatch, tmp_path) == [None, None, None]
    several = {**single, "damp σ=0.2": runs("damp σ=0.2", 3, 8.0)}
    bars = damp_vs_daap_bars(several)
    assert bars["sgd"][1] is None and bars["damp σ=0.2"][1] == pytest.approx([1.0, 1.0, 1.0])
    assert bars["damp σ=0.2"][0] == pytest.approx([9.0, 9.0, 9.0])


@pytest.mark.parametrize("res", [
    {"clean": {"error": 12.5}},
    {"clean": {"error": 12.5}, "summary": {}, "fgsm": [{"eps": 0.01}], "meta": {}},
    {"clean": {"error": 12.5}, "summary": {"protocols": {}}},  # a summary without aggregates
    {"clean": {"error": 12.5}, "corruptions": {"fog": {"1": {"error": 20.0}, "5": {"error": 40.0}}}},
    {"clean": {"error": 12.5}, "corruptions": {}, "summary": {"severity_error": {"1": 20.0}}},
], ids=["clean only", "empty parts", "no aggregates", "corruptions without summary", "summary only"])
def test_report_of_minimal_results(res, tmp_path, capsys):
    sgd = write_run(tmp_path / "sgd", res)
    damp = write_run(tmp_path / "damp", res, {"method": {"name": "damp"}})  # no std: label still works
    assert main(["report", str(sgd), str(damp), "--out", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    assert "| sgd | 1 | 12.50 |" in printed and "| damp | 1 | 12.50 |" in printed
    assert (tmp_path / "rep" / "report.md").is_file()


def test_report_of_a_results_file_without_clean_error_is_one_line(tmp_path, capsys):
    run = write_run(tmp_path / "run", {"clean": {}})
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no clean error" in err


@pytest.mark.parametrize("res", [
    {"clean": {"error": 3.0}},
    {"clean": {"error": 3.0}, "summary": {"protocols": {}}, "fgsm": [{"eps": 0.1}],
     "variants": {"imagenet_a": {"images": 0}}},
    {"clean": {}},
])
def test_evaluate_prints_whatever_the_results_hold(res, monkeypatch, tmp_path, capsys):
    import damp.evaluate

    monkeypatch.setattr(damp.evaluate, "evaluate_saved_run", lambda *a, **k: res)
    assert main(["evaluate", str(tmp_path), "--out", str(tmp_path / "e.json"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "clean error" in out and "wrote" in out


def test_a_foreign_models_evaluation_is_named_by_its_model_and_runs_count_once(tmp_path):
    res = results(10.0, lambda n: 20.0)
    sgd = write_run(tmp_path / "sgd", res, {"method": {"name": "sgd"}})
    foreign = write_run(tmp_path / "ext", dict(res, meta={"method": None, "model": "pkg.models:build"}))
    assert main(["report", str(sgd), str(foreign), str(sgd), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| sgd | 1 |" in text and "| pkg.models:build | 1 |" in text


def test_runs_that_differ_beyond_the_label_are_separate_rows_and_seeds_are_one(tmp_path):
    from damp.suite_inputs import arm
    from damp.report import group, load_run

    def cfg(m: int, seed: int, device: str = "cpu") -> dict:
        return {"method": {"name": "damp", "std": 0.1, "num_perturbations": m}, "model": {"name": "small_cnn"},
                "data": {"name": "digits"}, "trainer": {"device": device}, "seed": seed}
    runs = [load_run(write_run(tmp_path / f"m{m}-s{seed}", results(10.0 + m, lambda n: 20.0), cfg(m, seed, device)))
            for m, seed, device in [(4, 0, "cpu"), (4, 1, "auto"), (8, 0, "cpu")]]
    groups = group(runs)
    assert sorted(groups) == ["damp σ=0.1 (num_perturbations=4)", "damp σ=0.1 (num_perturbations=8)"]
    assert len(groups["damp σ=0.1 (num_perturbations=4)"]) == 2  # seeds (and the device) do not split a group
    assert {arm(r) for r in runs} == {"damp"}
    dropout = load_run(write_run(tmp_path / "drop", results(9.0, lambda n: 20.0),
                                 {"method": {"name": "sgd"}, "model": {"dropout": 0.1}, "seed": 0}))
    assert arm(dropout) == "dropout" and dropout.label.startswith("dropout")
