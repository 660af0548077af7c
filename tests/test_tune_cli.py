"""``omnireid tune`` command line: one-line errors before anything starts; Ray only for this command."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from omnireid.cli.main import main
from omnireid.config import ConfigError


@pytest.fixture
def files(synthetic_root, tmp_path, make_tiny_cfg):
    config = tmp_path / "base.yaml"
    config.write_text(make_tiny_cfg(synthetic_root, str(tmp_path / "out"), "TEST.EVAL_PERIOD", "1").dump())
    space = tmp_path / "space.yml"
    space.write_text(yaml.safe_dump({"SOLVER.BASE_LR": {"loguniform": [1e-3, 1e-1]}}))
    return str(config), str(space)


@pytest.mark.parametrize("args, message", [
    (["--search-alg", "bohb", "--scheduler", "asha"], "--search-alg bohb works only with --scheduler hyperband"),
    (["--search-alg", "optuna", "--scheduler", "pbt"], "--scheduler pbt works only with --search-alg random"),
    (["--resources-per-trial", "cpu=1,tpu=2"], "--resources-per-trial: expected cpu=N,gpu=M"),
    (["--resources-per-trial", "cpu=1", "--workers-per-trial", "2"], "cpu=1 is less than one CPU for each of the 2"),
    (["--resources-per-trial", "cpu=4,gpu=1", "--workers-per-trial", "2"], "each of the 2 DDP workers needs a whole GPU"),
    (["--resume"], "--resume: no experiment to continue in"),
    (["SOLVER.MAX_ITER", "100"], "SOLVER.MAX_ITER is set: give --max-t"),
    (["TEST.EVAL_PERIOD", "0"], "TEST.EVAL_PERIOD must be > 0"),
    (["SOLVER.BASE_RL", "0.1"], "unknown config key 'SOLVER.BASE_RL'"),
    (["--reduction-factor", "1"], "--reduction-factor must be > 1"),
])
def test_bad_input_is_one_line_and_exit_2(files, args, message, capsys):
    config, space = files
    assert main(["tune", "--config-file", config, "--search-space", space, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("omnireid tune: error: ") and message in err and "\n" not in err, err


def test_bad_space_file_and_missing_files(files, tmp_path, capsys):
    config, _ = files
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"SOLVER.IMS_PER_BATCH": {"uniform": [16, 64]}}))
    assert main(["tune", "--config-file", config, "--search-space", str(bad)]) == 2
    assert "bad.yml: SOLVER.IMS_PER_BATCH is an integer but uniform[16, 64] draws floats" in capsys.readouterr().err
    assert main(["tune", "--config-file", config, "--search-space", str(tmp_path / "none.yml")]) == 2
    assert "search space file not found" in capsys.readouterr().err


def test_existing_experiment_is_not_overwritten(files, tmp_path, capsys):
    config, space = files
    experiment = tmp_path / "out" / "tune"
    experiment.mkdir(parents=True)
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    (experiment / "tuner.pkl").write_bytes(b"")
    assert main(["tune", "--config-file", config, "--search-space", space]) == 2
    assert "holds an experiment already: continue it with --resume" in capsys.readouterr().err


def test_resume_with_other_settings_names_the_difference(files, capsys):
    from omnireid.tune.runner import TuneSettings

    config, space = files
    settings = TuneSettings(config_file=config, opts=(), search_space=space, search_space_text="x", num_trials=4,
                            search_alg="bohb", scheduler="hyperband", metric="score", mode="max",
                            workers_per_trial=1, resources={"cpu": 1.0, "gpu": 0.0}, seed=0, reduction_factor=3.0,
                            max_t=0, max_concurrent=0)
    saved = {**json.loads(settings.to_json()), "num_trials": 8}
    with pytest.raises(ConfigError, match=r"--resume: exp was started with --num-trials 8, now 4"):
        settings.check_same_as(saved, "exp")


def test_ray_is_imported_by_the_tune_command_only():
    code = ("import sys\n"
            "from omnireid.cli.main import build_parser\n"
            "build_parser().parse_args(['tune', '--search-space', 's.yml'])\n"
            "import omnireid.engine, omnireid.tune, omnireid.tune.space, omnireid.tune.results, omnireid.tune.algorithms\n"
            "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))[:5]\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


def test_flags_after_overrides_are_read(files, capsys):
    config, space = files
    # --resume written after a KEY VALUE override is still the flag, not an override
    assert main(["tune", "--config-file", config, "SOLVER.MAX_EPOCH", "2", "--search-space", space, "--resume"]) == 2
    assert "--resume: no experiment to continue in" in capsys.readouterr().err
    assert main(["tune", "--config-file", config]) == 2
    assert "--search-space is required" in capsys.readouterr().err
