"""scripts/face_distillation_table.py: which runs count as complete, the table it prints, and that the
data command it prints (and runs) works at this version."""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("face_distillation_table", REPO / "scripts" / "face_distillation_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(out: Path, results: dict[int, dict[str, float]], weights_after_metrics: bool = False) -> None:
    """A run folder whose metrics.json holds ``{iteration: {set: Accuracy}}`` and an (empty) model_final.pth."""
    out.mkdir(parents=True)
    lines = [json.dumps({"iteration": it, "dataset": name, "Accuracy": acc, "AUC": 50.0})
             for it, sets in results.items() for name, acc in sets.items()]
    (out / "metrics.json").write_text("\n".join(lines) + "\n")
    (out / "model_final.pth").write_bytes(b"")
    metrics_time, weights_time = (100, 200) if weights_after_metrics else (200, 100)
    os.utime(out / "metrics.json", (metrics_time, metrics_time))
    os.utime(out / "model_final.pth", (weights_time, weights_time))


def test_complete_needs_the_final_evaluation(script, tmp_path):
    assert not script.complete(tmp_path / "missing")
    both = {"synthetic_frontal": 90.0, "synthetic_hard": 80.0}
    fake_run(tmp_path / "done", {90: both, 180: both})
    assert script.complete(tmp_path / "done")
    # model_final.pth is saved before the final evaluation: older metrics belong to an earlier evaluation
    fake_run(tmp_path / "stale", {90: both}, weights_after_metrics=True)
    assert not script.complete(tmp_path / "stale")
    # killed between the two verification sets of the final evaluation
    fake_run(tmp_path / "half", {90: both, 180: {"synthetic_frontal": 91.0}})
    assert not script.complete(tmp_path / "half")


def test_table_rows_by_hand(script, tmp_path):
    def run(frontal: float, hard: float) -> dict[int, dict[str, float]]:
        return {180: {"synthetic_frontal": frontal, "synthetic_hard": hard}}

    fake_run(script.run_dir(tmp_path, "teacher_iresnet18"), run(99.0, 95.0))
    fake_run(script.run_dir(tmp_path, "student_mbf", 0), run(90.0, 80.0))
    fake_run(script.run_dir(tmp_path, "student_mbf", 1), run(92.0, 84.0))
    fake_run(script.run_dir(tmp_path, "kd_iresnet-mbf", 0), run(91.0, 79.0))
    fake_run(script.run_dir(tmp_path, "kd_iresnet-mbf", 1), run(93.0, 85.0))
    rows = script.table(tmp_path, [0, 1]).splitlines()
    assert rows[2].startswith("| teacher iResNet-18 (width 0.5), 180 it, seed 0 | 99.00 / 95.00 |")
    # std of (90, 92) = sqrt(2) = 1.41; of (80, 84) = sqrt(8) = 2.83
    assert rows[3].endswith("| 90.00 / 80.00 | 92.00 / 84.00 | 91.00 ± 1.41 / 82.00 ± 2.83 | – |")
    assert rows[4].endswith("| 91.00 / 79.00 | 93.00 / 85.00 | 92.00 ± 1.41 / 82.00 ± 4.24 | 2/2 frontal, 1/2 hard |")


def test_printed_data_command_runs(script, tmp_path):
    """The data step the doc prints (and the one the script runs) import what exists at this version;
    the folder is already there, so neither writes anything."""
    (tmp_path / "data" / "synthetic_faces").mkdir(parents=True)
    command = next(line for line in script.doc_block([0, 1], "").splitlines() if line.startswith("python -c"))
    argv = [sys.executable, *shlex.split(command.replace("WORK", str(tmp_path)))[1:]]
    subprocess.run(argv, cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    script.prepare_data(tmp_path)
    assert os.listdir(tmp_path / "data" / "synthetic_faces") == []
