"""``omnireid tune`` end to end on a local Ray cluster of 2 CPUs, with tiny trials.

Pausing through a real scheduler, DDP trials, killing and resuming an experiment, retraining the
best config. The trials are the tiny ResNet-18 runs of the engine tests.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from omnireid.cli.main import main
from omnireid.engine.events import read_metrics
from omnireid.tune.algorithms import SCHEDULERS, Scheduler
from omnireid.utils.file_io import load_checkpoint_file

ray_tune = pytest.importorskip("ray.tune")


class PauseEachTrialOnce(ray_tune.schedulers.FIFOScheduler):
    """Pauses every trial at its first report; Ray then stops it and later resumes it from its checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.paused: set[str] = set()

    def on_trial_result(self, tune_controller, trial, result):
        if trial.trial_id not in self.paused:
            self.paused.add(trial.trial_id)
            return self.PAUSE
        return self.CONTINUE


SCHEDULERS.register("pause_each_trial_once")(Scheduler(lambda settings: PauseEachTrialOnce(), "test only"))


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """One local Ray cluster (2 CPUs) for the in-process experiments of this module."""
    from omnireid.tune.runner import ray_session

    with ray_session(None, str(tmp_path_factory.mktemp("ray"))):
        yield


@pytest.fixture
def base_config(synthetic_root, tmp_path, make_tiny_cfg):
    def write(*opts: str) -> str:
        cfg = make_tiny_cfg(synthetic_root, str(tmp_path / "out"), "SOLVER.MAX_EPOCH", "2", "TEST.EVAL_PERIOD", "1",
                            *opts)
        path = tmp_path / "base.yaml"
        path.write_text(cfg.dump())
        return str(path)

    return write


def write_space(tmp_path, space: dict) -> str:
    path = tmp_path / "space.yml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


def tune(config: str, space: str, output_dir: str, *args: str) -> int:
    return main(["tune", "--config-file", config, "--search-space", space, *args, "OUTPUT_DIR", output_dir])


def trial_dirs(output_dir: str) -> list[str]:
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(output_dir, "tune", "*", "params.json")))


def results(output_dir: str) -> list[dict]:
    with open(os.path.join(output_dir, "tune", "results.csv"), encoding="utf-8") as f:
        return list(csv.DictReader(f))


def final_weights(trial_dir: str) -> dict:
    return load_checkpoint_file(os.path.join(trial_dir, "train", "model_final.pth"))["model"]


def assert_same_weights(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], **tolerance, msg=f"{key} differs")


def test_trial_paused_by_the_scheduler_ends_as_if_never_paused(ray_cluster, base_config, tmp_path):
    config = base_config()
    space = write_space(tmp_path, {"SOLVER.BASE_LR": 0.02, "MODEL.LOSSES.TRI.MARGIN": {"choice": [0.3]}})
    common = ["--num-trials", "1", "--search-alg", "random"]
    assert tune(config, space, str(tmp_path / "plain"), *common, "--scheduler", "fifo") == 0
    assert tune(config, space, str(tmp_path / "paused"), *common, "--scheduler", "pause_each_trial_once") == 0
    (plain,), (paused,) = trial_dirs(str(tmp_path / "plain")), trial_dirs(str(tmp_path / "paused"))
    assert "Resumed from" in open(os.path.join(paused, "train", "log.txt")).read()  # it was really paused
    assert_same_weights(final_weights(plain), final_weights(paused), rtol=0, atol=0)
    (a,), (b,) = results(str(tmp_path / "plain")), results(str(tmp_path / "paused"))
    assert a["status"] == b["status"] == "completed"
    assert a["score"] == b["score"] and a["mAP"] == b["mAP"] and a["Rank-1"] == b["Rank-1"]


def test_trial_with_two_ddp_workers_equals_one_process(ray_cluster, base_config, tmp_path):
    # CE only and GroupNorm: per-sample losses, so averaging over ranks equals the full-batch mean
    # (the settings of the engine's DDP equivalence test).
    config = base_config("MODEL.LOSSES.NAME", "['CrossEntropyLoss']", "MODEL.BACKBONE.NORM", "GN",
                         "MODEL.HEADS.WITH_BNNECK", "False", "INPUT.REA.ENABLED", "False",
                         "INPUT.FLIP.ENABLED", "False", "INPUT.PADDING.ENABLED", "False", "SOLVER.WARMUP_ITERS", "0",
                         "SOLVER.MAX_EPOCH", "1",
                         # fp32 NCHW, as the engine's DDP test: bf16 / NHWC round beyond the 1e-5 tolerance
                         "SOLVER.AMP.ENABLED", "False", "MODEL.CHANNELS_LAST", "false")
    space = write_space(tmp_path, {"SOLVER.BASE_LR": {"choice": [0.02]}})
    common = ["--num-trials", "1", "--search-alg", "random", "--scheduler", "fifo", "--resources-per-trial", "cpu=2"]
    assert tune(config, space, str(tmp_path / "one"), *common, "--workers-per-trial", "1") == 0
    assert tune(config, space, str(tmp_path / "two"), *common, "--workers-per-trial", "2") == 0
    (one,), (two,) = trial_dirs(str(tmp_path / "one")), trial_dirs(str(tmp_path / "two"))
    assert "2 process(es)" in open(os.path.join(two, "train", "log.txt")).read()
    assert os.path.isfile(os.path.join(two, "train", "log.txt.rank1"))
    assert_same_weights(final_weights(one), final_weights(two), rtol=1e-4, atol=1e-5)
    (a,), (b,) = results(str(tmp_path / "one")), results(str(tmp_path / "two"))
    assert a["status"] == b["status"] == "completed"
    for key in ("Rank-1", "mAP", "mINP"):  # the tolerance of the engine's DDP equivalence test
        assert float(a[key]) == pytest.approx(float(b[key]), abs=0.5)


# -- kill an experiment, resume it, retrain its best config ----------------------------------------
def _session_processes(session: int) -> list[int]:
    """Live processes of a session (the killed command and the Ray cluster it started)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry))
    return found


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the command and everything it started (its session), as a crash or `kill -9` would."""
    while True:
        proc.poll()  # reap the command itself
        alive = _session_processes(proc.pid)
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    proc.wait()


def _trial_statuses(experiment_dir: str) -> list[str]:
    states = glob.glob(os.path.join(experiment_dir, "experiment_state-*.json"))
    if not states:
        return []
    try:
        with open(max(states, key=os.path.getmtime), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):  # being rewritten
        return []
    return [json.loads(trial[0])["status"] for trial in data["trial_data"]]


@pytest.fixture(scope="module")
def resumed_experiment(ray_cluster, synthetic_root, tmp_path_factory):
    """An experiment of 2 trials killed (SIGKILL, with its Ray cluster) after the first trial
    completed, then continued with --resume."""
    from conftest import tiny_reid_cfg

    root = tmp_path_factory.mktemp("killed")
    output_dir = str(root / "out")
    config = root / "base.yaml"
    config.write_text(tiny_reid_cfg(synthetic_root, output_dir, "SOLVER.MAX_EPOCH", "2", "TEST.EVAL_PERIOD", "1").dump())
    space = write_space(root, {"SOLVER.BASE_LR": {"loguniform": [0.005, 0.05]}})
    args = ["tune", "--config-file", str(config), "--search-space", space, "--num-trials", "2", "--search-alg",
            "random", "--scheduler", "fifo", "--max-concurrent", "1", "--seed", "3"]
    # Experiment state written every second (Ray's default is every 10 s or more), so the kill
    # comes soon after the first trial completed, while the second one runs.
    env = {**os.environ, "OMNIREID_PROGRESS": "0", "PYTHONPATH": os.pathsep.join(sys.path),
           "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    experiment_dir = os.path.join(output_dir, "tune")
    with open(root / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "omnireid", *args], cwd=str(root), env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 900  # a safety net for a hung run, not a timing check
            while "TERMINATED" not in _trial_statuses(experiment_dir):
                assert proc.poll() is None, open(root / "killed.log").read()[-3000:]
                assert time.monotonic() < deadline, "the first trial never completed"
                time.sleep(1)
        finally:
            _kill_session(proc)
    statuses = _trial_statuses(experiment_dir)
    assert statuses.count("TERMINATED") == 1, statuses
    first = trial_dirs(output_dir)
    before = {d: open(os.path.join(d, "progress.csv")).read() for d in first}

    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main([*args, "--resume"]) == 0
    finally:
        os.chdir(cwd)
    return {"output_dir": output_dir, "progress_before": before, "root": root}


def test_resume_finishes_a_killed_experiment_without_rerunning_finished_trials(resumed_experiment):
    output_dir = resumed_experiment["output_dir"]
    rows = results(output_dir)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    dirs = trial_dirs(output_dir)
    assert len(dirs) == 2
    rerun = []
    for trial_dir, before in resumed_experiment["progress_before"].items():
        log = open(os.path.join(trial_dir, "train", "log.txt")).read()
        after = open(os.path.join(trial_dir, "progress.csv")).read()
        if before.count("\n") == 3:  # header + 2 evaluations: it had completed before the kill
            assert after == before and log.count("Starting training from iteration 0") == 1, trial_dir
        else:
            rerun.append(trial_dir)
    assert len(rerun) <= 1


def test_best_config_retrains_to_the_best_trial_metric_exactly(resumed_experiment):
    output_dir = resumed_experiment["output_dir"]
    best_config = os.path.join(output_dir, "tune", "best_config.yaml")
    header = open(best_config).read().splitlines()[:2]
    best_id = header[0].split(": ")[1].split(",")[0]
    best = next(r for r in results(output_dir) if r["trial"] == best_id)
    assert "OMP_NUM_THREADS=1 omnireid train --config-file best_config.yaml" in header[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMNIREID_PROGRESS": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-m", "omnireid", "train", "--config-file", best_config],
                         cwd=str(resumed_experiment["root"]), env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    final = read_metrics(os.path.join(output_dir, "best", "metrics.json"))[-1]
    assert (final["Rank-1"] + final["mAP"]) / 2 == float(best["score"])
    assert final["mAP"] == float(best["mAP"]) and final["mINP"] == float(best["mINP"])


# -- the README demo (slow) --------------------------------------------------------------------------
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from omnireid.data.synthetic import write_synthetic_reid

    root = tmp_path_factory.mktemp("demo_data")
    write_synthetic_reid(str(root / "Market-1501-v15.09.15"), seed=0, workers=2)  # `make demo`'s dataset
    return str(root)


@pytest.mark.slow
@pytest.mark.parametrize("search_alg, scheduler", [("bohb", "hyperband"), ("optuna", "asha")])
def test_readme_demo_search(demo_data, tmp_path, search_alg, scheduler):
    """The README's demo: 4 ResNet-18 trials on the synthetic data, on 2 CPU cores."""
    out = str(tmp_path / "out")
    env = {**os.environ, "OMNIREID_PROGRESS": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-m", "omnireid", "tune", "--config-file", "configs/Tune/demo_R18.yml",
                          "--search-space", "configs/Tune/demo_space.yml", "--num-trials", "4",
                          "--search-alg", search_alg, "--scheduler", scheduler,
                          "DATASETS.ROOT", demo_data, "OUTPUT_DIR", out],
                         cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"omnireid tune: 4 trials, {search_alg} + {scheduler}, score (max)" in run.stdout
    rows = results(out)
    assert len(rows) == 4 and all(r["status"] in ("completed", "stopped early") for r in rows)
    assert any(r["status"] == "completed" for r in rows)
    assert os.path.isfile(os.path.join(out, "tune", "best_config.yaml"))
    assert os.path.isfile(os.path.join(out, "tune", "metric_over_time.png"))
