"""Run (or resume) an experiment on Ray Tune and write its results. The only module that starts Ray.

Layout under ``OUTPUT_DIR``::

    tune/                  Ray's experiment (resumable with --resume)
      omnireid_tune.json   the settings the experiment was started with
      <trial id>/          Ray's trial folder: result.json, progress.csv, checkpoint_*/
        train/             the trial's OUTPUT_DIR: config.yaml, log.txt, metrics.json, checkpoints
      ray/                 the local Ray cluster's session files
      results.csv, best_config.yaml, metric_over_time.png
    best/                  where best_config.yaml trains
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np

from omnireid.config import CfgNode, ConfigError
from omnireid.config.fastreid import nest
from omnireid.engine import setup_cfg
from omnireid.utils.file_io import atomic_write_text

from . import results as R
from .algorithms import SCHEDULERS, SEARCH_ALGORITHMS, SchedulerSettings, SearchSettings, check_combination
from .space import SearchSpace, load_search_space, space_summary
from .trial import TrialJob, run_trial

EXPERIMENT = "tune"  # the experiment folder's name under OUTPUT_DIR
SETTINGS_FILE = "omnireid_tune.json"
# A Unix socket path is at most 107 bytes; Ray adds ~63 to its temp dir.
_MAX_RAY_TEMP_DIR = 107 - 64


class TuneError(ConfigError):
    """The experiment ran but no trial trained to the end; names the trials' error and where its log is."""


@dataclass(frozen=True)
class TuneSettings:
    """Everything that defines an experiment; ``--resume`` must repeat it."""

    config_file: str
    opts: tuple[str, ...]
    search_space: str
    search_space_text: str
    num_trials: int
    search_alg: str
    scheduler: str
    metric: str
    mode: str
    workers_per_trial: int
    resources: dict[str, float]
    seed: int
    reduction_factor: float
    max_t: int
    max_concurrent: int

    @property
    def threads_per_worker(self) -> int:
        return max(1, int(self.resources["cpu"] // self.workers_per_trial))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def check_same_as(self, saved: dict[str, Any], where: str) -> None:
        current = json.loads(self.to_json())
        for key, value in current.items():
            if saved.get(key) != value:
                shown = "its content" if key == "search_space_text" else f"{saved.get(key)!r}"
                raise ConfigError(f"--resume: {where} was started with {_flag(key)} {shown}, "
                                  f"now {'it differs' if key == 'search_space_text' else repr(value)}; "
                                  "repeat the original command (plus --resume)")


def _flag(key: str) -> str:
    names = {"config_file": "--config-file", "opts": "overrides", "search_space_text": "--search-space",
             "resources": "--resources-per-trial"}
    return names.get(key, "--" + key.replace("_", "-"))


def parse_resources(text: str | None, workers: int) -> dict[str, float]:
    """``cpu=4,gpu=2`` -> ``{"cpu": 4.0, "gpu": 2.0}``; default one CPU (and one GPU when CUDA is
    visible) per worker."""
    import torch

    resources = {"cpu": float(workers), "gpu": float(workers if torch.cuda.is_available() else 0)}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not sep or key not in resources or amount < 0 or not math.isfinite(amount):
            raise ConfigError(f"--resources-per-trial: expected cpu=N,gpu=M with N, M >= 0, got {item!r}")
        resources[key] = amount
    if resources["cpu"] < workers:
        raise ConfigError(f"--resources-per-trial cpu={resources['cpu']:g} is less than one CPU for each of "
                          f"the {workers} workers of a trial")
    if workers > 1 and 0 < resources["gpu"] < workers:
        raise ConfigError(f"--resources-per-trial gpu={resources['gpu']:g}: each of the {workers} DDP workers "
                          "needs a whole GPU (or use gpu=0)")
    return resources


def evaluations_per_trial(cfg: CfgNode) -> int:
    """Reports a full trial makes: one per evaluation (the schedulers' time unit)."""
    if cfg.TEST.EVAL_PERIOD <= 0:
        raise ConfigError("TEST.EVAL_PERIOD must be > 0: trials report the metric after each evaluation")
    if cfg.SOLVER.MAX_ITER:
        raise ConfigError("SOLVER.MAX_ITER is set: give --max-t (evaluations in a full trial), or budget "
                          "the training with SOLVER.MAX_EPOCH")
    return math.ceil(cfg.SOLVER.MAX_EPOCH / cfg.TEST.EVAL_PERIOD)


def _trial_dirname(trial) -> str:
    return trial.trial_id


@contextlib.contextmanager
def _short_path(path: str) -> Iterator[str]:
    """``path``, or a short symbolic link to it when Ray's socket paths inside would be too long."""
    if len(path) <= _MAX_RAY_TEMP_DIR:
        yield path
        return
    holder = tempfile.mkdtemp(prefix="omnireid-ray-")
    link = os.path.join(holder, "r")
    os.symlink(path, link)
    try:
        yield link
    finally:
        shutil.rmtree(holder, ignore_errors=True)


@contextlib.contextmanager
def ray_session(address: str | None, temp_dir: str) -> Iterator[None]:
    """Connect to ``address``, or start a local cluster whose files live in ``temp_dir``.

    A local cluster starts offline and without prompts: no auth token (``RAY_AUTH_MODE=disabled``
    unless set: only this process and its workers use it), no usage stats. An existing cluster is
    reached with the environment's ``RAY_AUTH_MODE`` / token. Reuses a session the caller already
    started (notebooks, tests).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    controller_log = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _OneLineTrialErrors) for f in controller_log.filters):
        controller_log.addFilter(_OneLineTrialErrors())
    if ray.is_initialized():
        yield
        return
    common = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address:
        ray.init(address=address, **common)
        try:
            yield
        finally:
            ray.shutdown()
        return
    os.makedirs(temp_dir, exist_ok=True)
    with _short_path(os.path.abspath(temp_dir)) as short:
        ray.init(_temp_dir=short, include_dashboard=False, **common)
        try:
            yield
        finally:
            ray.shutdown()


def _load_settings(experiment_dir: str) -> dict[str, Any]:
    path = os.path.join(experiment_dir, SETTINGS_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"--resume: {experiment_dir} has no {SETTINGS_FILE}; it was not started by omnireid tune")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def one_line_error(exc: BaseException) -> str:
    """``Type: message`` of a trial's exception (Ray wraps it; its error.txt keeps the traceback)."""
    cause = getattr(exc, "cause", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"


class _OneLineTrialErrors(logging.Filter):
    """Ray logs each failed trial's traceback on the console; one line is enough there."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.getMessage().startswith("Trial task failed"):
            record.msg, record.args = f"{record.getMessage()}: {one_line_error(record.exc_info[1])}", ()
            record.exc_info = record.exc_text = None
        return True


def _ray_bookkeeping() -> set[str]:
    """Keys Ray adds to every result (the table keeps the evaluation count and the trial's time)."""
    from ray.tune.result import AUTO_RESULT_KEYS

    keys = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "should_checkpoint", "experiment_tag", "hyperband_info"}
    return keys - {"training_iteration", "time_total_s"}


def _summaries(grid, space: SearchSpace, metric: str) -> list[R.TrialSummary]:
    trials = []
    for result in grid:
        trial_id = os.path.basename(result.path.rstrip("/"))
        config = result.config
        if config is None:  # failed before its first report: Ray wrote the sampled config beside it
            params = os.path.join(result.path, "params.json")
            if os.path.isfile(params):
                with open(params, encoding="utf-8") as f:
                    config = json.load(f)
        values = space.decode(config) if config else {}
        values = {k: v for k, v in values.items() if k in space.domains}
        history: list[tuple[float, float]] = []
        frame = result.metrics_dataframe
        if frame is not None and metric in frame and "time_total_s" in frame:
            history = [(float(t), float(v)) for t, v in zip(frame["time_total_s"], frame[metric])]
        error = one_line_error(result.error) if result.error is not None else ""
        metrics = {k: v for k, v in (result.metrics or {}).items() if k not in _ray_bookkeeping()}
        trials.append(R.TrialSummary(trial_id=trial_id, values=values, metrics=metrics, history=history,
                                     error=error))
    return sorted(trials, key=lambda t: t.trial_id)


def run_experiment(settings: TuneSettings, address: str | None, resume: bool, plugins: tuple[str, ...] = ()) -> int:
    base = setup_cfg(settings.config_file, list(settings.opts))
    space = load_search_space(settings.search_space, base)
    check_combination(settings.search_alg, settings.scheduler)
    with_fixed = base.clone().defrost().merge_from_dict(nest(space.fixed), source=space.source)
    max_t = settings.max_t or evaluations_per_trial(with_fixed)
    output_dir = os.path.abspath(base.OUTPUT_DIR)
    experiment_dir = os.path.join(output_dir, EXPERIMENT)

    from ray import tune

    exists = tune.Tuner.can_restore(experiment_dir)
    if resume and not exists:
        raise ConfigError(f"--resume: no experiment to continue in {experiment_dir}")
    if not resume and exists:
        raise ConfigError(f"{experiment_dir} holds an experiment already: continue it with --resume, "
                          "or set another OUTPUT_DIR")
    if resume:
        settings.check_same_as(_load_settings(experiment_dir), experiment_dir)
    else:
        os.makedirs(experiment_dir, exist_ok=True)
        atomic_write_text(os.path.join(experiment_dir, SETTINGS_FILE), settings.to_json())

    workers = settings.workers_per_trial
    job = TrialJob(config_file=settings.config_file, opts=settings.opts, space=space, workdir=os.getcwd(),
                   experiment_dir=experiment_dir, metric=settings.metric, workers=workers,
                   threads_per_worker=settings.threads_per_worker, plugins=plugins)
    print(f"omnireid tune: {'resuming' if resume else 'starting'} {experiment_dir}: {settings.num_trials} trials, "
          f"{settings.search_alg} + {settings.scheduler}, {settings.metric} ({settings.mode}), {max_t} evaluations "
          f"per full trial\n  " + "\n  ".join(space_summary(space)), flush=True)
    budget_warning = SCHEDULERS.get(settings.scheduler).budget_warning(max_t, settings.reduction_factor)
    if budget_warning and not resume:
        print(f"omnireid tune: warning: {budget_warning}", flush=True)
    random.seed(settings.seed)  # PBT's exploration draws from these in the driver
    np.random.seed(settings.seed)
    with ray_session(address, os.path.join(experiment_dir, "ray")):
        trainable = tune.with_resources(tune.with_parameters(run_trial, job=job), settings.resources)
        if resume:
            tuner = tune.Tuner.restore(experiment_dir, trainable, resume_unfinished=True, resume_errored=True)
        else:
            algorithm = SEARCH_ALGORITHMS.get(settings.search_alg)
            searcher, param_space = algorithm.build(SearchSettings(space, settings.seed, settings.metric,
                                                                   settings.mode, settings.max_concurrent))
            scheduler = SCHEDULERS.get(settings.scheduler).build(
                SchedulerSettings(max_t=max_t, reduction_factor=settings.reduction_factor, space=space,
                                  algorithm=algorithm))
            tuner = tune.Tuner(
                trainable, param_space=param_space,
                tune_config=tune.TuneConfig(metric=settings.metric, mode=settings.mode, search_alg=searcher,
                                            scheduler=scheduler, num_samples=settings.num_trials,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=EXPERIMENT, storage_path=output_dir, verbose=1,
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                          failure_config=tune.FailureConfig(max_failures=0)))
        grid = tuner.fit()
        trials = _summaries(grid, space, settings.metric)
        unfinished = settings.num_trials - grid.num_terminated - grid.num_errors
    code = _write_results(trials, base, space, settings, experiment_dir, output_dir, interrupted=unfinished > 0)
    if unfinished > 0:  # Ctrl-C: Ray saved the experiment and returned
        print(f"omnireid tune: interrupted with {unfinished} unfinished trial(s); continue with the same command "
              "plus --resume", flush=True)
        return 130
    return code


def _write_results(trials: list[R.TrialSummary], base: CfgNode, space: SearchSpace, settings: TuneSettings,
                   experiment_dir: str, output_dir: str, interrupted: bool = False) -> int:
    metric, mode = settings.metric, settings.mode
    best = R.best_trial(trials, metric, mode)
    atomic_write_text(os.path.join(experiment_dir, "results.csv"), R.results_csv(trials, metric))
    plot = os.path.join(experiment_dir, "metric_over_time.png")
    R.plot_history(plot, trials, metric)
    print(f"\nomnireid tune: {len(trials)} trials, {settings.search_alg} + {settings.scheduler}, "
          f"{metric} ({mode})\n" + R.results_table(trials, metric, mode, best), flush=True)
    if best is None and interrupted:
        return 0
    if best is None:
        errors = sorted({t.error for t in trials if t.error})
        detail = f": {errors[0]}" if len(errors) == 1 else ""
        raise TuneError(f"no trial trained to the end{detail}; see {experiment_dir}")
    best_path = os.path.join(experiment_dir, "best_config.yaml")
    R.write_best_config(best_path, R.best_config(base, space, best, os.path.join(output_dir, "best")),
                        best, metric, settings.workers_per_trial, settings.threads_per_worker)
    print(f"\nbest trial {best.trial_id}: {metric} = {best.metrics[metric]:.4f}\n"
          f"results: {os.path.join(experiment_dir, 'results.csv')}\nplot: {plot}\n"
          f"best config: {best_path}", flush=True)
    return 0
