"""One trial = one ordinary training run through the Trainer, reporting to Ray Tune after each evaluation.

A trial builds the config's trainer (``TRAINER.NAME``) as ``omnireid train`` does and registers one
hook, :class:`TuneReporter`, which runs after ``EvalHook``. After every
evaluation the reporter saves the *whole* training state (model, optimizer, schedule, sampler
position, RNG) and hands the metrics plus that checkpoint to a :class:`ReportSink`. Ray's
schedulers pause, stop and resume trials at these reports; a resumed trial restores the checkpoint
with the trainer's exact-resume path, so it continues as if it had never stopped.

With ``workers > 1`` the trial starts that many DDP processes on the resources Ray gave it (gloo on
CPU, NCCL on GPU, through the same ``distributed_context`` that ``torchrun`` uses); rank 0 sends its
reports to the trial process, which passes them to Ray.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import traceback
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from omnireid.config import CfgNode
from omnireid.engine import Trainer, default_setup, distributed_context, setup_cfg
from omnireid.engine.checkpoint import LAST_CHECKPOINT, unwrap
from omnireid.engine.trainer import trainer_class
from omnireid.engine.hooks import HookBase
from omnireid.evaluation.headline import headline_metric
from omnireid.utils.file_io import atomic_write_text

from .space import SearchSpace

logger = logging.getLogger(__name__)

TRIAL_STATE = "trial.json"  # in every reported checkpoint: the config values of the trial that saved it
TRAIN_SUBDIR = "train"  # the trial's OUTPUT_DIR, inside Ray's trial folder


class MetricNotReported(KeyError):
    """``--metric`` names a key the trials do not report."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class TrialJob:
    """What every trial of an experiment shares: the base config, the space, where things go."""

    config_file: str  # absolute path
    opts: tuple[str, ...]
    space: SearchSpace
    workdir: str  # relative paths in the config (datasets...) are relative to this folder
    experiment_dir: str  # Ray's experiment folder; trial t trains in <experiment_dir>/<t>/train
    metric: str
    workers: int = 1
    threads_per_worker: int = 1
    plugins: tuple[str, ...] = field(default_factory=tuple)  # modules registering tasks / extensions

    def load_plugins(self) -> None:
        for module in self.plugins:
            importlib.import_module(module)

    def trial_dir(self, trial_id: str) -> str:
        return os.path.join(self.experiment_dir, trial_id)

    def trial_config(self, sampled: dict[str, Any], trial_id: str) -> CfgNode:
        """The base config with the space's fixed and sampled values, its own OUTPUT_DIR and seed."""
        cfg = self.space.apply(setup_cfg(self.config_file, list(self.opts)), sampled)
        cfg.OUTPUT_DIR = os.path.join(self.trial_dir(trial_id), TRAIN_SUBDIR)
        if cfg.SEED < 0:  # one seed per trial, the same when the trial is resumed elsewhere
            cfg.SEED = zlib.crc32(trial_id.encode()) & 0x7FFFFFFF
        return cfg.freeze()


class ReportSink(Protocol):
    """Where the rank-0 reporter sends ``(metrics, checkpoint file)`` after each evaluation."""

    def report(self, metrics: dict[str, float], checkpoint_file: str) -> None: ...


def trial_metrics(results: dict[str, dict[str, float]], protocols: dict[str, str]) -> dict[str, float]:
    """Flatten evaluation results for Ray: ``<test set>/<metric>``, bare names when there is one
    test set, and ``score``: the mean over test sets of each protocol's headline metric."""
    flat: dict[str, float] = {}
    for name, metrics in results.items():
        flat.update({f"{name}/{key}": float(value) for key, value in metrics.items()})
    if len(results) == 1:
        flat.update({key: float(value) for key, value in next(iter(results.values())).items()})
    scores = [headline_metric(protocols[name])(metrics) for name, metrics in results.items()]
    flat["score"] = sum(scores) / len(scores)
    return flat


class TuneReporter(HookBase):
    """After each evaluation: save the whole state, then report the metrics with that checkpoint.

    Registered on the trainer like any hook, after ``EvalHook``. Runs on every rank (saving gathers
    every rank's RNG state); only rank 0 has a sink. New results are recognised by identity:
    ``EvalHook`` stores a new dict in ``trainer.latest_results`` after each evaluation.
    """

    def __init__(self, sink: ReportSink | None, metric: str) -> None:
        self.sink = sink
        self.metric = metric
        self._seen: object = None
        self._protocols: dict[str, str] | None = None

    def before_train(self) -> None:
        self._seen = self.trainer.latest_results  # results from before this run are not news

    def after_step(self) -> None:
        trainer = self.trainer
        results = trainer.latest_results
        if results is self._seen:
            return
        self._seen = results
        iteration = trainer.iter + 1
        # The name the periodic checkpointer uses: this state (after evaluation) replaces its file.
        name = "model_final" if iteration == trainer.max_iter else f"model_{iteration:07d}"
        path = trainer.checkpointer.save(name, iteration=iteration, **trainer.checkpoint_extra())
        if self.sink is None:
            return
        metrics = trial_metrics(results, self._test_protocols())
        if self.metric not in metrics:
            raise MetricNotReported(f"--metric {self.metric!r} is not among the reported metrics: "
                                    f"{', '.join(sorted(metrics))}")
        metrics.update(iteration=iteration, max_iter=trainer.max_iter, epoch=iteration / trainer.iters_per_epoch,
                       seed=trainer.cfg.SEED)
        self.sink.report(metrics, path)

    def _test_protocols(self) -> dict[str, str]:
        """Test set name -> protocol, from the trainer's own test-set builder."""
        if self._protocols is None:
            cfg = self.trainer.cfg
            self._protocols = {test_set.name: test_set.protocol for dataset in cfg.DATASETS.TESTS
                               for test_set in type(self.trainer).build_test_sets(cfg, dataset)}
        return self._protocols


def adopt_own_hyperparameters(trainer: Trainer) -> None:
    """After restoring another trial's state (PBT's exploit step), train on with this trial's
    optimizer hyperparameters (learning rate, weight decay, momentum...) but the restored
    weights, optimizer moments and position in the schedule."""
    fresh = type(trainer).build_optimizer(trainer.cfg, unwrap(trainer.model))
    groups = trainer.optimizer.param_groups
    if len(groups) != len(fresh.param_groups):
        raise RuntimeError("the restored optimizer groups parameters differently from this trial's config")
    for group, own in zip(groups, fresh.param_groups):
        own_lr = own["lr"]  # before any schedule: the group's initial LR
        # The schedule multiplies each group's initial LR: keep the restored position in it.
        current = group["lr"] * own_lr / group["initial_lr"] if group.get("initial_lr") else own_lr
        group.update({k: v for k, v in own.items() if k != "params"})
        group["initial_lr"], group["lr"] = own_lr, current
    trainer.scheduler.base_lrs = [group["initial_lr"] for group in groups]
    logger.info("Continuing another trial's state with this trial's optimizer hyperparameters")


# -- running one trial -------------------------------------------------------------------------
def train_trial(cfg: CfgNode, sink: ReportSink | None, metric: str, resume: bool, adopt: bool) -> None:
    """Train ``cfg`` with its trainer (``TRAINER.NAME``) in this process, which may be one DDP rank,
    reporting through ``sink`` after each evaluation."""
    default_setup(cfg)
    trainer = trainer_class(cfg)(cfg, resume=resume)
    try:
        if adopt:
            adopt_own_hyperparameters(trainer)
        trainer.register_hooks([TuneReporter(sink, metric)])
        trainer.train()
    finally:
        trainer.release()


def restore_checkpoint(checkpoint_dir: str, output_dir: str, values: dict[str, Any]) -> bool:
    """Make ``checkpoint_dir`` (a reported checkpoint) the newest checkpoint of ``output_dir``.

    Returns whether it came from a trial with other config values (PBT copying a better trial).
    """
    with open(os.path.join(checkpoint_dir, LAST_CHECKPOINT), encoding="utf-8") as f:
        name = f.read().strip()
    with open(os.path.join(checkpoint_dir, TRIAL_STATE), encoding="utf-8") as f:
        state = json.load(f)
    os.makedirs(output_dir, exist_ok=True)
    target = os.path.join(output_dir, name)
    shutil.copyfile(os.path.join(checkpoint_dir, name), target + ".partial")
    os.replace(target + ".partial", target)
    atomic_write_text(os.path.join(output_dir, LAST_CHECKPOINT), name)
    return state["values"] != _jsonable(values)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values))


def pack_checkpoint(folder: str, checkpoint_file: str, values: dict[str, Any]) -> None:
    """Fill ``folder`` with a reportable checkpoint: the state file, its marker and the trial's values."""
    name = os.path.basename(checkpoint_file)
    try:  # same file system: no extra copy of the weights
        os.link(checkpoint_file, os.path.join(folder, name))
    except OSError:
        shutil.copyfile(checkpoint_file, os.path.join(folder, name))
    with open(os.path.join(folder, LAST_CHECKPOINT), "w", encoding="utf-8") as f:
        f.write(name)
    with open(os.path.join(folder, TRIAL_STATE), "w", encoding="utf-8") as f:
        json.dump({"values": _jsonable(values)}, f)


class RayTuneSink:
    """Reports to Ray Tune with the state as a ``tune.Checkpoint`` (Ray copies it into the experiment)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def report(self, metrics: dict[str, float], checkpoint_file: str) -> None:
        from ray import tune

        with tempfile.TemporaryDirectory(dir=os.path.dirname(checkpoint_file), prefix=".report-") as folder:
            pack_checkpoint(folder, checkpoint_file, self.values)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def run_trial(config: dict[str, Any], job: TrialJob) -> None:
    """Ray Tune's trainable: one trial, resumed from Ray's checkpoint when there is one."""
    from ray import tune

    job.load_plugins()
    os.chdir(job.workdir)
    trial_id = tune.get_context().get_trial_id()
    cfg = job.trial_config(config, trial_id)
    values = job.space.decode(config)
    resume = adopt = False
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            adopt = restore_checkpoint(folder, cfg.OUTPUT_DIR, values)
        resume = True
    sink = RayTuneSink(values)
    if job.workers == 1:
        torch.set_num_threads(job.threads_per_worker)
        train_trial(cfg, sink, job.metric, resume, adopt)
    else:
        run_workers(job, config, trial_id, sink, resume, adopt)


# -- DDP trials: W processes started by the trial ----------------------------------------------
class WorkerFailed(RuntimeError):
    """A DDP worker of a trial died without telling why (killed, out of memory...)."""


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _PipeSink:
    """Rank 0's sink in a DDP trial: send the report to the trial process and wait until Ray took it."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def report(self, metrics: dict[str, float], checkpoint_file: str) -> None:
        self.conn.send(("report", metrics, checkpoint_file))
        if self.conn.recv() != "ack":
            raise RuntimeError("the trial process did not acknowledge the report")


def _exit_with_parent(parent_pid: int) -> None:
    """If Ray stops the trial process, its workers must not train on as orphans."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-trial").start()


def _worker_main(rank: int, port: int, job: TrialJob, config: dict, trial_id: str, resume: bool, adopt: bool,
                 conn, parent_pid: int) -> None:
    _exit_with_parent(parent_pid)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(job.workers),
                      LOCAL_WORLD_SIZE=str(job.workers), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(job.threads_per_worker)
    try:
        job.load_plugins()
        os.chdir(job.workdir)
        cfg = job.trial_config(config, trial_id)
        with distributed_context():
            train_trial(cfg, _PipeSink(conn) if rank == 0 else None, job.metric, resume, adopt)
    except BaseException as exc:  # tell the trial process why, then fail this worker
        if conn is not None:
            conn.send(("error", _picklable(exc)))
        raise
    if conn is not None:
        conn.send(("done",))


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError("".join(traceback.format_exception(exc)))


def run_workers(job: TrialJob, config: dict, trial_id: str, sink: ReportSink, resume: bool, adopt: bool) -> None:
    """Train with ``job.workers`` DDP processes; relay rank 0's reports to ``sink``."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe()
    port = _free_port()
    procs = [ctx.Process(target=_worker_main, name=f"trial-{trial_id}-rank{rank}",
                         args=(rank, port, job, config, trial_id, resume, adopt,
                               child_conn if rank == 0 else None, os.getpid()))
             for rank in range(job.workers)]
    for proc in procs:
        proc.start()
    try:
        while True:
            if parent_conn.poll(0.5):
                message = parent_conn.recv()
                if message[0] == "report":
                    sink.report(message[1], message[2])
                    parent_conn.send("ack")
                elif message[0] == "error":
                    raise message[1]
                else:  # done
                    break
            failed = [p for p in procs if p.exitcode not in (None, 0)]
            if failed and not parent_conn.poll(0.5):
                raise WorkerFailed(f"DDP worker {failed[0].name} exited with code {failed[0].exitcode}; "
                                   f"see {job.trial_dir(trial_id)}/{TRAIN_SUBDIR}/log.txt*")
        for proc in procs:
            proc.join()
        failed = [p for p in procs if p.exitcode != 0]
        if failed:
            raise WorkerFailed(f"DDP worker {failed[0].name} exited with code {failed[0].exitcode} after training")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=10)
