"""The training loop (small, hook-driven) and the trainer that builds every piece from a config."""
from __future__ import annotations

import abc
import contextlib
import logging
import os
from typing import Any, Iterator

import torch
from torch import nn

from omnireid.config import CfgNode
from omnireid.data import build_test_loader, build_train_loader
from omnireid.evaluation import build_evaluator
from omnireid.modeling import build_model
from omnireid.solver import build_lr_scheduler, build_optimizer
from omnireid.utils import comm

from . import hooks as H
from .checkpoint import Checkpointer, load_model_weights, unwrap
from .events import ConsoleWriter, EvalResultWriter, MetricStorage, TensorboardWriter
from .inference import inference_on_dataset, print_results_table, progress_enabled
from .setup import save_config

logger = logging.getLogger(__name__)


class TrainerBase(abc.ABC):
    """Runs ``run_step`` from ``start_iter`` to ``max_iter`` and calls the hooks around it."""

    def __init__(self) -> None:
        self._hooks: list[H.HookBase] = []
        self.iter = self.start_iter = self.max_iter = 0
        self.iters_per_epoch = 1
        self.storage = MetricStorage()

    @property
    def epoch(self) -> int:
        return self.iter // max(self.iters_per_epoch, 1)

    def register_hooks(self, hooks: list[H.HookBase | None]) -> None:
        for hook in hooks:
            if hook is not None:
                hook.trainer = self
                self._hooks.append(hook)

    def _call(self, stage: str) -> None:
        for hook in self._hooks:
            getattr(hook, stage)()

    def train(self) -> None:
        logger.info("Starting training from iteration %d of %d", self.start_iter, self.max_iter)
        self._call("before_train")
        try:
            for self.iter in range(self.start_iter, self.max_iter):
                self.storage.iteration = self.iter
                self._call("before_step")
                self.run_step()
                self._call("after_step")
            self.iter = self.max_iter
        finally:
            self._call("after_train")

    @abc.abstractmethod
    def run_step(self) -> None:
        """One optimisation step."""


def _autocast_dtype(cfg: CfgNode, device: torch.device) -> torch.dtype | None:
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    choice = cfg.SOLVER.AMP.DTYPE
    dtypes = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if choice == "auto":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if choice not in dtypes:
        raise ValueError(f"SOLVER.AMP.DTYPE must be auto, fp16 or bf16; got {choice!r}")
    if device.type == "cpu" and dtypes[choice] is torch.float16:
        raise ValueError("SOLVER.AMP.DTYPE fp16 is not supported on CPU; use bf16 or auto")
    return dtypes[choice]


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A new dict whose tensors live on ``device`` (the caller's batch is left untouched)."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


class Trainer(TrainerBase):
    """Builds data, model, optimizer, schedule, evaluators and hooks from ``cfg`` and trains.

    Works in one process and under ``torchrun`` (DistributedDataParallel; NCCL on CUDA, gloo on
    CPU). ``resume=True`` continues exactly from the newest checkpoint in ``OUTPUT_DIR``.
    """

    def __init__(self, cfg: CfgNode, resume: bool = False) -> None:
        super().__init__()
        cfg = cfg.clone().defrost()
        self.device = comm.resolve_device(cfg.MODEL.DEVICE)
        self.output_dir = cfg.OUTPUT_DIR

        resume_state = self._find_resume_state(resume)
        self.start_iter = int(resume_state["iteration"]) if resume_state else 0

        per_rank_batch = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        self.train_data = build_train_loader(cfg, start_index=self.start_iter * per_rank_batch)
        cfg.MODEL.HEADS.NUM_CLASSES = self.train_data.num_classes
        cfg.MODEL.HEADS.NUM_CAMERAS = self.train_data.num_cameras
        self.cfg = cfg.freeze()
        save_config(cfg, self.output_dir)  # with the class/camera counts, so it can rebuild the model

        self.iters_per_epoch = self.train_data.iters_per_epoch
        self.max_iter = cfg.SOLVER.MAX_ITER or cfg.SOLVER.MAX_EPOCH * self.iters_per_epoch

        model = build_model(cfg).to(self.device)
        if cfg.MODEL.WEIGHTS and not resume_state:
            load_model_weights(model, cfg.MODEL.WEIGHTS)
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer, self.iters_per_epoch)
        self.amp_dtype = _autocast_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype is torch.float16 and self.device.type == "cuda")
        self.checkpointer = Checkpointer(model, self.output_dir, optimizer=self.optimizer,
                                         scheduler=self.scheduler, scaler=self.scaler)
        if resume_state:
            self.checkpointer.restore(resume_state, source=self._resume_path)
        if comm.get_world_size() > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
        self.model = model.train()  # evaluation restores the mode it found
        self._data_iter: Iterator[dict] = iter(self.train_data.loader)
        self.register_hooks(self.build_hooks())

    # ---------------------------------------------------------------------------------------
    def _find_resume_state(self, resume: bool) -> dict | None:
        self._resume_path = None
        if not resume:
            return None
        path = Checkpointer(nn.Module(), self.output_dir).last_checkpoint()
        if path is None:
            logger.info("No checkpoint in %s: training from scratch", self.output_dir)
            return None
        from omnireid.utils.file_io import load_checkpoint_file

        self._resume_path = path
        return load_checkpoint_file(path)

    def build_hooks(self) -> list[H.HookBase | None]:
        cfg = self.cfg
        ipe = self.iters_per_epoch
        writers: list = []
        if comm.is_main_process():
            writers = [ConsoleWriter(self.max_iter), TensorboardWriter(self.output_dir)]
        return [
            H.IterationTimer(),
            H.LRScheduler(self.optimizer, self.scheduler),
            H.FreezeLayers(unwrap(self.model), list(cfg.MODEL.FREEZE_LAYERS), cfg.SOLVER.FREEZE_ITERS)
            if cfg.MODEL.FREEZE_LAYERS and cfg.SOLVER.FREEZE_ITERS > 0 else None,
            # Hooks the model asks for (e.g. a distiller's EMA teacher), before the checkpointer so
            # that a checkpoint holds the state after this step's update.
            *getattr(unwrap(self.model), "training_hooks", list)(),
            # Checkpoint before evaluating so an evaluation crash never loses the trained state.
            H.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD * ipe, lambda: {}),
            H.PreciseBN(cfg.TEST.EVAL_PERIOD * ipe, unwrap(self.model), self._precise_bn_batches,
                        cfg.TEST.PRECISE_BN.NUM_ITER) if cfg.TEST.PRECISE_BN.ENABLED and cfg.TEST.EVAL_PERIOD > 0 else None,
            H.EvalHook(cfg.TEST.EVAL_PERIOD * ipe, self._evaluate_and_record) if cfg.TEST.EVAL_PERIOD > 0 else None,
            H.PeriodicWriter(writers, period=20),
            H.ProgressBar(enabled=progress_enabled()),
        ]

    def _precise_bn_batches(self) -> Iterator[dict]:
        """Unlabelled training batches of ``TEST.PRECISE_BN.DATASET`` on this device."""
        cfg = self.cfg.clone().defrost()
        cfg.DATASETS.NAMES = [cfg.TEST.PRECISE_BN.DATASET]
        cfg.DATALOADER.NUM_WORKERS = min(cfg.DATALOADER.NUM_WORKERS, 2)
        for batch in build_train_loader(cfg).loader:
            batch = move_batch(batch, self.device)
            batch["targets"] = torch.full_like(batch["targets"], -1)
            yield batch

    def run_step(self) -> None:
        model = self.model
        with _timed(self.storage, "data_time"):
            batch = move_batch(next(self._data_iter), self.device)
        with self._autocast():
            losses = model(batch)
        total = sum(losses.values())
        if not torch.isfinite(total):
            detail = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise FloatingPointError(
                f"Loss became non-finite at iteration {self.iter} (epoch {self.epoch}): {detail}. "
                "Lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS or check the input data.")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self._call("after_backward")
        clip = self.cfg.SOLVER.CLIP_GRADIENTS
        if clip.ENABLED:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in model.parameters() if p.grad is not None]
            if clip.CLIP_TYPE == "norm":
                torch.nn.utils.clip_grad_norm_(params, clip.CLIP_VALUE, norm_type=clip.NORM_TYPE)
            elif clip.CLIP_TYPE == "value":
                torch.nn.utils.clip_grad_value_(params, clip.CLIP_VALUE)
            else:
                raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'norm' or 'value', got {clip.CLIP_TYPE!r}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.storage.put_scalars(total_loss=comm.all_reduce_mean(total.detach()).item(),
                                 **{k: v.detach().item() for k, v in losses.items()})

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ---------------------------------------------------------------------------------------
    def _evaluate_and_record(self) -> dict[str, dict[str, float]]:
        results = evaluate(self.cfg, unwrap(self.model), self.device)
        if comm.is_main_process():
            writer = EvalResultWriter(os.path.join(self.output_dir, "metrics.json"))
            for dataset, metrics in results.items():
                writer.write_result({"iteration": self.iter + 1, "epoch": (self.iter + 1) / self.iters_per_epoch,
                                     "dataset": dataset, **metrics})
                self.storage.put_scalars(**{f"{dataset}/{k}": v for k, v in metrics.items()})
        return results

    def release(self) -> None:
        """Drop the model, optimizer and loader iterator (before tearing down process groups)."""
        for name in ("model", "optimizer", "scheduler", "checkpointer", "_data_iter", "train_data"):
            if hasattr(self, name):
                delattr(self, name)
        self._hooks.clear()


@contextlib.contextmanager
def _timed(storage: MetricStorage, name: str):
    import time

    start = time.perf_counter()
    yield
    storage.put_scalar(name, time.perf_counter() - start)


def evaluate(cfg: CfgNode, model: nn.Module, device: torch.device | None = None) -> dict[str, dict[str, float]]:
    """Evaluate ``model`` on every dataset of ``DATASETS.TESTS``; returns ``{dataset: metrics}``."""
    device = device or comm.resolve_device(cfg.MODEL.DEVICE)
    results = {}
    for name in cfg.DATASETS.TESTS:
        loader, num_query = build_test_loader(cfg, name)
        evaluator = build_evaluator(cfg, num_query, cfg.OUTPUT_DIR)
        logger.info("Evaluating on %s (%d queries, %d images)", name, num_query, len(loader.dataset))
        results[name] = inference_on_dataset(model, loader, evaluator, device=device,
                                             flip=cfg.TEST.FLIP.ENABLED)
    if comm.is_main_process():
        print_results_table(results)
    return results
