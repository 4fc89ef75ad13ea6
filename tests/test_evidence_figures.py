"""damp.evidence_figures: learning curves from metrics.jsonl and the hold-out Pareto picture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from damp.evidence_figures import holdout_point, plot_learning_curves, plot_pareto, training_curves
from damp.report import Run


def _run(path: Path, label: str, seed: int, rows: list[dict] | None, holdout: dict | None = None) -> Run:
    path.mkdir(parents=True)
    if rows is not None:
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {"clean": {"error": 10.0}, **(holdout or {})}
    return Run(path=path, label=label, seed=seed, results=results)


# As the trainer logs them (train.py): a loss row carries the epoch in progress, a validation row the epochs done.
ROWS = [{"step": 5, "epoch": 0, "loss": 2.0, "lr": 0.1}, {"step": 5, "epoch": 1, "val_error": 50.0, "val_nll": 1.5},
        {"step": 10, "epoch": 1, "loss": 1.0, "lr": 0.1}, {"step": 10, "epoch": 2, "val_error": 30.0, "val_nll": 0.9}]


def test_training_curves_place_losses_and_validations_at_their_steps(tmp_path):
    curves = training_curves(_run(tmp_path / "a", "sgd", 1, ROWS))
    assert curves == {"loss": [(5, 2.0), (10, 1.0)], "val_error": [(5, 50.0), (10, 30.0)],
                      "val_nll": [(5, 1.5), (10, 0.9)]}
    assert training_curves(_run(tmp_path / "b", "sgd", 2, None)) == {"loss": [], "val_error": [], "val_nll": []}


def test_learning_curves_are_drawn_only_when_some_run_logged_them(tmp_path):
    arms = {"sgd": [_run(tmp_path / "s1", "sgd", 1, ROWS), _run(tmp_path / "s2", "sgd", 2, ROWS)],
            "damp": [_run(tmp_path / "d1", "damp σ=0.2", 1, ROWS)]}
    assert plot_learning_curves(arms, tmp_path / "curves.png") and (tmp_path / "curves.png").stat().st_size > 0
    bare = {"sgd": [_run(tmp_path / "n1", "sgd", 1, None)]}
    assert not plot_learning_curves(bare, tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_pareto_takes_every_run_with_both_hold_out_numbers(tmp_path):
    both = {"holdout": {"error": 9.4}, "holdout_corruptions": {"mean_corruption_error": 25.0}}
    runs = [_run(tmp_path / "a", "damp σ=0.2", 0, None, both),
            _run(tmp_path / "b", "damp σ=0.4", 1, None, {"holdout": {"error": 13.6}})]
    assert holdout_point(runs[0]) == pytest.approx((9.4, 25.0)) and holdout_point(runs[1]) is None
    assert plot_pareto(runs, lambda r: "damp", tmp_path / "p.png") and (tmp_path / "p.png").is_file()
    assert not plot_pareto(runs[1:], lambda r: "damp", tmp_path / "q.png") and not (tmp_path / "q.png").exists()
