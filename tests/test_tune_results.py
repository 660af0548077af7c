"""Experiment outputs from trial summaries: status, best trial, table, CSV, best config, plot."""
from __future__ import annotations

import csv
import io

import pytest

from omnireid.engine import setup_cfg
from omnireid.tune import results as R
from omnireid.tune.space import parse_search_space


def trial(trial_id, lr, score, iteration=10, error="", seed=3):
    metrics = {} if error else {"score": score, "mAP": score - 1, "iteration": iteration, "max_iter": 10,
                                "training_iteration": iteration // 5, "time_total_s": 12.5, "seed": seed}
    history = [] if error else [(6.0, score - 2), (12.5, score)]
    return R.TrialSummary(trial_id=trial_id, values={"SOLVER.BASE_LR": lr, "INPUT.SIZE_TRAIN": [64, 32]},
                          metrics=metrics, history=history, error=error)


TRIALS = [trial("a_00000", 0.01, 50.0), trial("a_00001", 0.001, 70.0, iteration=5), trial("a_00002", 0.003, 60.0),
          trial("a_00003", 0.1, 0.0, error="FloatingPointError: Loss became non-finite")]


def test_status_and_best_among_trials_trained_to_the_end():
    assert [t.status for t in TRIALS] == [R.COMPLETED, R.STOPPED, R.COMPLETED, R.ERROR]
    # a_00001 scored higher but was stopped early: its config, retrained, would not give 70.
    assert R.best_trial(TRIALS, "score", "max").trial_id == "a_00002"
    assert R.best_trial(TRIALS, "score", "min").trial_id == "a_00000"
    assert R.best_trial(TRIALS[3:], "score", "max") is None


def test_table_and_csv_have_a_row_per_trial():
    best = R.best_trial(TRIALS, "score", "max")
    table = R.results_table(TRIALS, "score", "max", best).splitlines()
    assert table[0] == ("| trial | SOLVER.BASE_LR | INPUT.SIZE_TRAIN | score | iterations | evaluations | "
                        "time (s) | status |")
    assert table[4] == "| a_00002 (best) | 0.003 | [64, 32] | 60 | 10/10 | 2 | 12.5 | completed |"
    assert "stopped early" in table[3] and "error: FloatingPointError" in table[5]
    rows = list(csv.DictReader(io.StringIO(R.results_csv(TRIALS, "score"))))
    assert [r["trial"] for r in rows] == ["a_00000", "a_00001", "a_00002", "a_00003"]
    assert rows[1]["status"] == "stopped early" and rows[1]["score"] == "70.0" and rows[1]["mAP"] == "69.0"
    assert rows[2]["INPUT.SIZE_TRAIN"] == "[64, 32]" and rows[2]["time_total_s"] == "12.5"
    assert rows[3]["error"].startswith("FloatingPointError")


def test_best_config_is_the_base_with_the_trial_values_and_seed(tmp_path):
    base = setup_cfg(None, ["SOLVER.BASE_LR", "0.5", "SEED", "-1"])
    space = parse_search_space({"SOLVER.BASE_LR": {"loguniform": [1e-4, 1.0]}, "INPUT.SIZE_TRAIN": {"choice": [
        [64, 32], [128, 64]]}, "SOLVER.MAX_EPOCH": 7}, base)
    best = R.best_trial(TRIALS, "score", "max")
    cfg = R.best_config(base, space, best, str(tmp_path / "best"))
    assert cfg.SOLVER.BASE_LR == 0.003 and cfg.INPUT.SIZE_TRAIN == [64, 32] and cfg.SOLVER.MAX_EPOCH == 7
    assert cfg.SEED == 3 and cfg.OUTPUT_DIR == str(tmp_path / "best") and base.SOLVER.BASE_LR == 0.5
    path = tmp_path / "best_config.yaml"
    R.write_best_config(str(path), cfg, best, "score", workers=2, threads=1)
    text = path.read_text()
    assert text.startswith("# Best trial of `omnireid tune`: a_00002, score = 60.0000\n")
    assert "OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m omnireid train --config-file best_config.yaml" in text
    reloaded = setup_cfg(str(path))  # a config `omnireid train` reads as is
    assert reloaded.SOLVER.BASE_LR == 0.003 and reloaded.SEED == 3


def test_plot_is_a_png(tmp_path):
    path = tmp_path / "plot.png"
    R.plot_history(str(path), TRIALS, "score")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("value, text", [(0.00123, "0.00123"), (62.5, "62.5"), (7, "7"), ([1, 2], "[1, 2]")])
def test_cells(value, text):
    assert R._cell(value) == text
