"""The training loop (small, hook-driven) and the trainer that builds every piece from a config."""
from __future__ import annotations

import abc
import contextlib
import logging
import os
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from omnireid.config import CfgNode, ConfigError
from omnireid.data import TestSet, TrainData, build_test_loader, build_test_sets, build_train_loader
from omnireid.evaluation import build_evaluator
from omnireid.modeling import build_model
from omnireid.modeling.acceleration import accelerate, mixed_precision
from omnireid.modeling.weights import load_weights
from omnireid.solver import build_lr_scheduler, build_optimizer
from omnireid.utils import comm
from omnireid.utils.errors import TrainingDivergedError
from omnireid.utils.hardware import cpu_has_native_bf16
from omnireid.utils.registry import Registry
from omnireid.utils.sharding import exclude_sharded_from_ddp

from . import hooks as H
from .checkpoint import Checkpointer, unwrap
from .events import ConsoleWriter, EvalResultWriter, MetricStorage, TensorboardWriter
from .inference import inference_on_dataset, move_batch, print_results_table, progress_enabled
from .setup import save_config, save_metadata

logger = logging.getLogger(__name__)


class TrainerBase(abc.ABC):
    """Runs ``run_step`` from ``start_iter`` to ``max_iter`` and calls the hooks around it."""

    def __init__(self) -> None:
        self._hooks: list[H.HookBase] = []
        self.iter = self.start_iter = self.max_iter = 0
        self.iters_per_epoch = 1
        self.storage = MetricStorage()
        self.latest_results: dict[str, dict[str, float]] = {}  # set by EvalHook: {test set: metrics}

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


def autocast_dtype(cfg: CfgNode, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``SOLVER.AMP`` on ``device`` (None: fp32). ``auto``: fp16 on CUDA; on CPU
    bf16 where the processor computes it natively (AVX512-BF16/AMX: 2-3x faster), else fp32 with a note
    (emulated bf16 is slower than fp32)."""
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    choice = cfg.SOLVER.AMP.DTYPE
    dtypes = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if choice == "auto":
        if device.type == "cuda":
            return torch.float16
        if cpu_has_native_bf16():
            return torch.bfloat16
        logger.info("SOLVER.AMP: DTYPE auto trains in fp32 on this CPU: it has no native bf16, where bf16 "
                    "autocast is slower than fp32 (SOLVER.AMP.DTYPE bf16 forces it)")
        return None
    if choice not in dtypes:
        raise ConfigError(f"SOLVER.AMP.DTYPE must be auto, fp16 or bf16; got {choice!r}")
    if device.type == "cpu" and dtypes[choice] is torch.float16:
        raise ConfigError("SOLVER.AMP.DTYPE fp16 is not supported on CPU; use bf16 or auto")
    return dtypes[choice]


# name -> fn(cfg, train_data): writes the model-shape keys the training data decides (class count,
# camera count, attribute count...) into the trainer's own copy of the config.
MODEL_SHAPE_REGISTRY = Registry("model-shape filler")
# TRAINER.NAME -> Trainer subclass (only for tasks that genuinely need one; prefer registering pieces)
TRAINER_REGISTRY = Registry("trainer")


@MODEL_SHAPE_REGISTRY.register("num_classes")
def fill_num_classes(cfg: CfgNode, data: TrainData) -> None:
    """Classifier width: the number of training labels (identities or classes)."""
    cfg.MODEL.HEADS.NUM_CLASSES = data.num_classes


@MODEL_SHAPE_REGISTRY.register("num_cameras")
def fill_num_cameras(cfg: CfgNode, data: TrainData) -> None:
    """Side-information embeddings (ViT SIE): the number of training cameras (0 without cameras)."""
    cfg.MODEL.HEADS.NUM_CAMERAS = data.num_cameras


@TRAINER_REGISTRY.register()
class Trainer(TrainerBase):
    """Builds data, model, optimizer, schedule, evaluators and hooks from ``cfg`` and trains.

    Every piece comes from an overridable builder (classmethods, as detectron2's ``DefaultTrainer``):
    ``build_train_loader``, ``build_model``, ``build_optimizer``, ``build_lr_scheduler``,
    ``build_test_sets``, ``build_test_loader``, ``build_evaluator`` and (per instance) ``build_hooks``;
    a task customises one of them by subclassing, never by copying ``__init__``. The model-shape keys
    the data decides (``MODEL.HEADS.NUM_CLASSES``...) are filled by the functions registered in
    ``MODEL_SHAPE_REGISTRY``. Works in one process and under ``torchrun`` (DistributedDataParallel;
    NCCL on CUDA, gloo on CPU). ``resume=True`` continues exactly from the newest checkpoint in
    ``OUTPUT_DIR``. After each evaluation ``latest_results`` holds ``{test set: metrics}``.
    """

    def __init__(self, cfg: CfgNode, resume: bool = False) -> None:
        super().__init__()
        cfg = cfg.clone().defrost()
        self.device = comm.resolve_device(cfg.MODEL.DEVICE)
        self.output_dir = cfg.OUTPUT_DIR

        resume_state = self._find_resume_state(resume)
        self.start_iter = int(resume_state["iteration"]) if resume_state else 0

        per_rank_batch = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        self.train_data = self.build_train_loader(cfg, start_index=self.start_iter * per_rank_batch)
        for name in MODEL_SHAPE_REGISTRY:  # in registration order
            MODEL_SHAPE_REGISTRY.get(name)(cfg, self.train_data)
        self.cfg = cfg.freeze()
        save_config(cfg, self.output_dir)  # with the class/camera counts, so it can rebuild the model
        save_metadata(self.train_data.metadata, self.output_dir)

        self.iters_per_epoch = self.train_data.iters_per_epoch
        self.max_iter = cfg.SOLVER.MAX_ITER or cfg.SOLVER.MAX_EPOCH * self.iters_per_epoch

        model = self.build_model(cfg)
        if cfg.MODEL.WEIGHTS and not resume_state:
            load_weights(model, cfg.MODEL.WEIGHTS, strict=False)  # fine-tuning: what does not fit is reported
        self.optimizer = self.build_optimizer(cfg, model)
        self.scheduler = self.build_lr_scheduler(cfg, self.optimizer, self.iters_per_epoch)
        self.amp_dtype = autocast_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype is torch.float16 and self.device.type == "cuda")
        self.checkpointer = Checkpointer(model, self.output_dir, optimizer=self.optimizer,
                                         scheduler=self.scheduler, scaler=self.scaler)
        if resume_state:
            self.checkpointer.restore(resume_state, source=self._resume_path)
        if comm.get_world_size() > 1:
            exclude_sharded_from_ddp(model)  # model-parallel parameters (Partial FC) stay per rank
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
        self.model = model.train()  # evaluation restores the mode it found
        self._data_iter: Iterator[dict] = iter(self.train_data.loader)
        self.register_hooks(self.build_hooks())

    # builders: override one in a subclass to customise a piece ---------------------------------
    @classmethod
    def build_train_loader(cls, cfg: CfgNode, start_index: int = 0) -> TrainData:
        """The training data (loader, label counts, metadata) of ``DATASETS.NAMES``."""
        return build_train_loader(cfg, start_index=start_index)

    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        """``MODEL.META_ARCHITECTURE`` on ``MODEL.DEVICE`` (weights are loaded by the caller)."""
        device = comm.resolve_device(cfg.MODEL.DEVICE)
        return accelerate(cfg, build_model(cfg).to(device), device)  # MODEL.CHANNELS_LAST / MODEL.COMPILE

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer,
                           iters_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
        return build_lr_scheduler(cfg, optimizer, iters_per_epoch)

    @classmethod
    def build_test_sets(cls, cfg: CfgNode, dataset_name: str) -> list[TestSet]:
        """The test sets (items + protocol) of one ``DATASETS.TESTS`` entry."""
        return build_test_sets(cfg, dataset_name)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, test_set: TestSet) -> DataLoader:
        return build_test_loader(cfg, test_set)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, test_set: TestSet, output_dir: str | None) -> Any:
        """The evaluator of ``test_set``'s protocol (or ``TEST.EVALUATOR``)."""
        return build_evaluator(cfg, test_set, output_dir)

    @classmethod
    def test(cls, cfg: CfgNode, model: nn.Module, device: torch.device | None = None) -> dict[str, dict[str, float]]:
        """Evaluate ``model`` on every test set of ``DATASETS.TESTS``; returns ``{test set: metrics}``."""
        device = device or comm.resolve_device(cfg.MODEL.DEVICE)
        results = {}
        for dataset_name in cfg.DATASETS.TESTS:
            for test_set in cls.build_test_sets(cfg, dataset_name):
                loader = cls.build_test_loader(cfg, test_set)
                evaluator = cls.build_evaluator(cfg, test_set, cfg.OUTPUT_DIR)
                logger.info("Evaluating on %s (protocol %s, %d images)", test_set.name, test_set.protocol,
                            len(test_set.items))
                results[test_set.name] = inference_on_dataset(model, loader, evaluator, device=device,
                                                              flip=cfg.TEST.FLIP.ENABLED)
        if comm.is_main_process():
            print_results_table(results)
        return results

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

    def checkpoint_extra(self) -> dict[str, Any]:
        """What checkpoints hold besides the training state: the training-set ``metadata``."""
        return {"metadata": self.train_data.metadata}

    def save_checkpoint(self, name: str) -> str:
        """Save the whole training state after the current step as ``OUTPUT_DIR/<name>.pth`` (call on
        every rank); what the periodic checkpointer writes, for hooks that save on their own schedule."""
        return self.checkpointer.save(name, iteration=self.iter + 1, **self.checkpoint_extra())

    def build_hooks(self) -> list[H.HookBase | None]:
        """The hooks, in order; an override usually extends ``super().build_hooks()``."""
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
            # Callbacks the model declares (e.g. a distiller's EMA teacher), before the checkpointer so
            # that a checkpoint holds the state after this step's update.
            H.ModelCallbacks(unwrap(self.model)) if H.ModelCallbacks.wanted(unwrap(self.model)) else None,
            # PreciseBN before the checkpointer: the checkpoint (model_final.pth included) holds the BN
            # statistics that are evaluated and that training continues with, so it reproduces the
            # evaluated metrics and a resume is exact.
            H.PreciseBN(cfg.TEST.EVAL_PERIOD * ipe, unwrap(self.model), self._precise_bn_batches,
                        cfg.TEST.PRECISE_BN.NUM_ITER) if cfg.TEST.PRECISE_BN.ENABLED and cfg.TEST.EVAL_PERIOD > 0 else None,
            # Checkpoint before evaluating so an evaluation crash never loses the trained state.
            H.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD * ipe, self.checkpoint_extra),
            H.EvalHook(cfg.TEST.EVAL_PERIOD * ipe, self._evaluate_and_record) if cfg.TEST.EVAL_PERIOD > 0 else None,
            H.PeriodicWriter(writers, period=20),
            H.ProgressBar(enabled=progress_enabled()),
        ]

    def _precise_bn_batches(self) -> Iterator[dict]:
        """Unlabelled training batches of ``TEST.PRECISE_BN.DATASET`` on this device."""
        cfg = self.cfg.clone().defrost()
        cfg.DATASETS.NAMES = [cfg.TEST.PRECISE_BN.DATASET]
        cfg.DATALOADER.NUM_WORKERS = min(cfg.DATALOADER.NUM_WORKERS, 2)
        for batch in self.build_train_loader(cfg).loader:
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
            raise TrainingDivergedError(
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
                raise ConfigError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'norm' or 'value', got {clip.CLIP_TYPE!r}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.storage.put_scalars(total_loss=comm.all_reduce_mean(total.detach()).item(),
                                 **{k: v.detach().item() for k, v in losses.items()})

    def _autocast(self) -> contextlib.AbstractContextManager:
        return mixed_precision(self.device.type, self.amp_dtype)

    # ---------------------------------------------------------------------------------------
    def _evaluate_and_record(self) -> dict[str, dict[str, float]]:
        results = type(self).test(self.cfg, unwrap(self.model), self.device)
        if comm.is_main_process():
            writer = EvalResultWriter(os.path.join(self.output_dir, "metrics.json"))
            for name, metrics in results.items():
                writer.write_result({"iteration": self.iter + 1, "epoch": (self.iter + 1) / self.iters_per_epoch,
                                     "dataset": name, **metrics})
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


def trainer_class(cfg: CfgNode) -> type[Trainer]:
    """The ``TRAINER.NAME`` trainer class."""
    try:
        return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    except KeyError as exc:
        raise ConfigError(f"TRAINER.NAME: {exc.args[0]}") from None


def evaluate(cfg: CfgNode, model: nn.Module, device: torch.device | None = None) -> dict[str, dict[str, float]]:
    """Evaluate ``model`` on every test set of ``DATASETS.TESTS`` with the ``TRAINER.NAME`` trainer's builders."""
    return trainer_class(cfg).test(cfg, model, device)
