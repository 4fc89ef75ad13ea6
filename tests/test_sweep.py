"""`damp sweep`: the grid x seeds, selection on the hold-out split, and kill/resume."""

from __future__ import annotations

import json

import pytest

from damp.cli import main
from damp.sweep import parse_grid, plan_runs, run_sweep
from tests.test_train import interrupt_after

SETS = ["trainer.device=cpu", "trainer.progress=false", "data.batch_size=32", "data.max_train_images=128",
        "trainer.max_steps=4", "trainer.log_every=2", "trainer.checkpoint_every=2", "data.holdout=0.25",
        "eval.corruptions=none", "method.name=damp", "method.num_perturbations=2"]
GRID = {"method.std": ["0.05", "0.3"]}


def test_grid_parsing_and_plan():
    assert parse_grid(["method.std=0.1, 0.2", "optim.lr=0.1"]) == {"method.std": ["0.1", "0.2"], "optim.lr": ["0.1"]}
    runs = plan_runs(parse_grid(["method.std=0.1,0.2"]), seeds=3)
    assert [r.name for r in runs][:2] == ["std=0.1__seed=0", "std=0.1__seed=1"] and len(runs) == 6
    for bad in (["method.std"], ["method.std="], ["=1,2"]):
        with pytest.raises(ValueError, match="KEY=V1"):
            parse_grid(bad)


def test_sweep_selects_on_holdout_and_resumes_after_a_kill(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 4 + 3)  # the first run's 4 steps, then dies in step 4 of the second
        with pytest.raises(KeyboardInterrupt):
            run_sweep(None, GRID, 1, out, sets=SETS)
    first = out / "std=0.05__seed=0" / "results.json"
    assert first.is_file() and not (out / "std=0.3__seed=0" / "results.json").exists()
    stamp = first.stat().st_mtime_ns
    with pytest.raises(FileExistsError):
        run_sweep(None, GRID, 1, out, sets=SETS)  # without --resume a non-empty sweep is refused
    with pytest.raises(ValueError, match="different sweep"):
        run_sweep(None, {"method.std": ["0.1"]}, 1, out, sets=SETS, resume=True)
    seen = []
    summary = run_sweep(None, GRID, 1, out, sets=SETS, resume=True, on_run=lambda run, res: seen.append(run.name))
    assert seen == ["std=0.05__seed=0", "std=0.3__seed=0"]
    assert first.stat().st_mtime_ns == stamp  # the finished run was skipped, not retrained
    resumed = json.loads((out / "std=0.3__seed=0" / "results.json").read_text())
    assert resumed["meta"]["steps"] == 4
    holdout = {row["point"]["method.std"]: row["holdout_error"] for row in summary["points"]}
    best = min(holdout, key=holdout.get)
    assert summary["selection"]["damp"]["point"] == {"method.std": best}
    text = (out / "summary.md").read_text()
    assert "method.std=0.05" in text and "method.std=0.3" in text and "yes" in text


def test_sweep_cli_prints_a_line_per_run(tmp_path, capsys):
    args = ["sweep", "--grid", "method.std=0.1", "--seeds", "2", "--out", str(tmp_path / "s"), "--quiet"]
    for item in SETS:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "selected for damp: damp σ=0.1" in out and (tmp_path / "s" / "summary.json").is_file()
    assert out.count("std=0.1__seed=") == 2  # one line per finished run
    assert main(["sweep", "--grid", "method.std", "--out", str(tmp_path / "t")]) == 2


def test_final_seeds_run_only_the_selected_point(tmp_path):
    seen = []
    summary = run_sweep(None, GRID, 1, tmp_path / "s", sets=SETS, final_seeds=3,
                        on_run=lambda run, res: seen.append(run.name))
    chosen = summary["selection"]["damp"]["point"]["method.std"]
    assert seen == ["std=0.05__seed=0", "std=0.3__seed=0", f"std={chosen}__seed=1", f"std={chosen}__seed=2"]
    rows = {row["point"]["method.std"]: row for row in summary["points"]}
    assert len(rows[chosen]["runs"]) == 3 and all(len(r["runs"]) == 1 for p, r in rows.items() if p != chosen)
    assert rows[chosen]["train_seconds"] > 0 and "seeds up to 2" in summary["protocol"]


def test_a_sweep_without_grid_is_the_config_over_seeds(tmp_path):
    summary = run_sweep(None, {}, 2, tmp_path / "s", sets=[*SETS, "method.std=0.1"])
    assert [r["dir"] for r in summary["points"][0]["runs"]] == ["seed=0", "seed=1"]
    assert "none (one point)" in (tmp_path / "s" / "summary.md").read_text()


def test_final_seeds_need_a_holdout_split(tmp_path):
    sets = [s for s in SETS if not s.startswith("data.holdout")]
    with pytest.raises(ValueError, match="data.holdout"):
        run_sweep(None, GRID, 1, tmp_path / "s", sets=sets, final_seeds=2)


def test_fresh_seeds_are_the_only_reported_ones(tmp_path):
    from damp.suite_inputs import load_inputs

    summary = run_sweep(None, GRID, 1, tmp_path / "s", sets=SETS, fresh_seeds=2)
    chosen = summary["selection"]["damp"]["point"]["method.std"]
    assert summary["reported_seeds"] == [1, 2] and "fresh seeds 1..2, the only ones reported" in summary["protocol"]
    inputs = load_inputs([tmp_path / "s"])
    assert sorted(r.config["seed"] for r in inputs.selected) == [1, 2]  # the tuning seed 0 is not reported
    assert all(r.config["method"]["std"] == float(chosen) for r in inputs.selected)
    assert len(inputs.tuning) == 2  # both grid points' tuning seeds
    with pytest.raises(ValueError, match="give one"):
        run_sweep(None, GRID, 1, tmp_path / "t", sets=SETS, fresh_seeds=2, final_seeds=3)


def test_a_selection_at_the_grid_edge_extends_the_grid(tmp_path, monkeypatch):
    import damp.sweep as sweep

    # Hold-out error as a known function of std, minimal at 0.4: the grid 0.05, 0.1 must grow upwards.
    def fake_train(cfg, directory, resume=False):
        directory.mkdir(parents=True, exist_ok=True)
        results = {"holdout": {"error": abs(cfg.method.std - 0.4)}, "clean": {"error": 1.0}, "meta": {}}
        (directory / "results.json").write_text(json.dumps(results))
        return results
    monkeypatch.setattr(sweep, "train", fake_train)
    summary = run_sweep(None, {"method.std": ["0.05", "0.1"]}, 1, tmp_path / "s", sets=SETS, extend_edges=3)
    assert summary["grid"]["method.std"] == ["0.05", "0.1", "0.2", "0.4", "0.8"]
    assert [e["added"] for e in summary["extensions"]] == ["0.2", "0.4", "0.8"]
    assert summary["selection"]["damp"]["point"] == {"method.std": "0.4"}  # interior after three steps
    assert "the upper edge" in summary["protocol"]
    assert summary["still_at_edge"] is None and "still at an edge" not in summary["protocol"]
    capped = run_sweep(None, {"method.std": ["0.05", "0.1"]}, 1, tmp_path / "t", sets=SETS, extend_edges=1)
    assert capped["grid"]["method.std"] == ["0.05", "0.1", "0.2"] and len(capped["extensions"]) == 1
    assert capped["still_at_edge"] == "damp selected 0.2, the upper edge"  # the one extension did not suffice
    assert "still at an edge after 1 extension(s)" in capped["protocol"]


def test_tune_sets_apply_to_tuning_runs_only_and_holdout_corruptions_are_tuning_numbers(tmp_path):
    from damp.config import load_config

    summary = run_sweep(None, {"method.std": ["0.1"]}, 1, tmp_path / "s", sets=SETS, fresh_seeds=1,
                        tune_sets=["eval.holdout_corruptions=gaussian_noise,contrast"])
    tuning = json.loads((tmp_path / "s" / "std=0.1__seed=0" / "results.json").read_text())
    fresh = json.loads((tmp_path / "s" / "std=0.1__seed=1" / "results.json").read_text())
    assert set(tuning["holdout_corruptions"]["severity_error"]) == {"1", "2", "3", "4", "5"}
    assert "holdout_corruptions" not in fresh and tuning["corruptions"] == fresh["corruptions"] == {}
    assert summary["points"][0]["holdout_corruption_error"] == pytest.approx(
        tuning["holdout_corruptions"]["mean_corruption_error"])
    with pytest.raises(ValueError, match="eval.holdout_corruptions: needs a hold-out split"):
        load_config(None, ["eval.holdout_corruptions=all"])


def test_a_time_budget_stops_between_runs_and_resume_continues(tmp_path, capsys):
    args = ["sweep", "--grid", "method.std=0.1,0.2", "--out", str(tmp_path / "s"), "--quiet",
            "--budget-minutes", "1e-9", *[f"--set={s}" for s in SETS]]
    assert main(args) == 75  # every call trains one run before the budget can stop it
    err = capsys.readouterr().err
    assert "stopped at the time budget before std=0.2__seed=0 (1 runs trained" in err
    assert "resume with: damp sweep" in err and err.strip().endswith("--resume")
    assert (tmp_path / "s" / "std=0.1__seed=0" / "results.json").is_file()
    assert main([*args, "--resume"]) == 0  # the second call trains the last run and writes the summary
    assert (tmp_path / "s" / "summary.json").is_file()


def test_finished_runs_resume_from_their_records_alone(tmp_path):
    # The converged suite commits run records without checkpoints (*.pt is git-ignored): a sweep that
    # resumes on another machine must read those runs, not retrain them.
    out = tmp_path / "sweep"
    first = run_sweep(None, GRID, 1, out, sets=SETS)
    for checkpoint in out.rglob("*.pt"):
        checkpoint.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/results.json")}
    assert len(stamps) == 2
    again = run_sweep(None, GRID, 1, out, sets=SETS, resume=True)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/results.json")} == stamps
    assert again["selection"] == first["selection"]
