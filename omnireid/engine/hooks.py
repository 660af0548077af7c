"""Training hooks: everything around the optimisation step lives here, not in the loop."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from omnireid.utils import comm
from omnireid.utils.errors import ConfigError

if TYPE_CHECKING:
    from .trainer import TrainerBase

logger = logging.getLogger(__name__)


class HookBase:
    """Called by the trainer at fixed points; ``self.trainer`` is set when registered."""

    trainer: "TrainerBase"

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_step(self) -> None: ...

    def after_backward(self) -> None:
        """After gradients exist, before clipping and the optimizer step."""

    def after_step(self) -> None: ...


def _period_reached(trainer: "TrainerBase", period_iters: int) -> bool:
    next_iter = trainer.iter + 1
    return next_iter == trainer.max_iter or (period_iters > 0 and next_iter % period_iters == 0)


class IterationTimer(HookBase):
    """Records the wall time of each step (``time``)."""

    def before_step(self) -> None:
        self._start = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("time", time.perf_counter() - self._start)


class LRScheduler(HookBase):
    """Records the LR used by this step, then advances the per-iteration schedule."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        self.optimizer, self.scheduler = optimizer, scheduler

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("lr", max(g["lr"] for g in self.optimizer.param_groups))
        self.scheduler.step()


class ModelCallbacks(HookBase):
    """Calls the training callbacks a model declares, so models never import the engine.

    A model may define ``on_train_start(start_iter: int)`` (called once before the first step;
    ``start_iter`` is 0 from scratch, the resumed iteration otherwise) and ``on_step_end(iteration:
    int)`` (after each optimizer step). Registered before the checkpointer, so a checkpoint holds the
    state after this step's callback (e.g. a distiller's EMA teacher average).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @staticmethod
    def wanted(model: nn.Module) -> bool:
        """Whether ``model`` declares any callback (the trainer registers this hook only then)."""
        return any(callable(getattr(model, name, None)) for name in ("on_train_start", "on_step_end"))

    def before_train(self) -> None:
        callback = getattr(self.model, "on_train_start", None)
        if callable(callback):
            callback(self.trainer.start_iter)

    def after_step(self) -> None:
        callback = getattr(self.model, "on_step_end", None)
        if callable(callback):
            callback(self.trainer.iter)


class FreezeLayers(HookBase):
    """Keep the named modules fixed (eval mode, no updates) for the first ``freeze_iters`` steps.

    Gradients of frozen parameters are dropped after backward rather than switching
    ``requires_grad``, which DistributedDataParallel does not allow after wrapping.
    """

    def __init__(self, model: nn.Module, names: list[str], freeze_iters: int) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ConfigError(f"MODEL.FREEZE_LAYERS names unknown modules {missing}; "
                              f"top-level modules are {[n for n, _ in model.named_children()]}")
        self.modules = [modules[n] for n in names]
        self.freeze_iters = freeze_iters

    def _active(self) -> bool:
        return self.trainer.iter < self.freeze_iters

    def before_step(self) -> None:
        if self._active():
            for module in self.modules:
                module.eval()
        elif self.trainer.iter == self.freeze_iters:
            logger.info("Unfreezing layers at iteration %d", self.trainer.iter)
            for module in self.modules:
                module.train()

    def after_backward(self) -> None:
        if self._active():
            for module in self.modules:
                for param in module.parameters():
                    param.grad = None


class PeriodicCheckpointer(HookBase):
    """``model_{iter:07d}`` every ``period`` iterations and ``model_final`` at the end."""

    def __init__(self, checkpointer, period_iters: int, extra: Callable[[], dict]) -> None:
        self.checkpointer = checkpointer
        self.period_iters = period_iters
        self.extra = extra

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if next_iter == self.trainer.max_iter:
            self.checkpointer.save("model_final", iteration=next_iter, **self.extra())
        elif self.period_iters > 0 and next_iter % self.period_iters == 0:
            self.checkpointer.save(f"model_{next_iter:07d}", iteration=next_iter, **self.extra())


class EvalHook(HookBase):
    """Runs ``eval_fn`` (-> ``{test set: {metric: value}}``) every ``period`` iterations and after the
    last one; the results go to ``trainer.latest_results`` and to the metric storage (as
    ``"<test set>/<metric>"``), where the hooks after this one (a tuner's reporter...) read them."""

    def __init__(self, period_iters: int, eval_fn: Callable[[], dict[str, dict[str, float]]]) -> None:
        self.period_iters = period_iters
        self.eval_fn = eval_fn

    def after_step(self) -> None:
        if _period_reached(self.trainer, self.period_iters):
            results = self.eval_fn()
            self.trainer.latest_results = results
            for name, metrics in results.items():
                self.trainer.storage.put_scalars(**{f"{name}/{k}": float(v) for k, v in metrics.items()})
            comm.synchronize()


class PeriodicWriter(HookBase):
    """Publishes the metric storage every ``period`` iterations and at the end."""

    def __init__(self, writers: list, period: int = 20) -> None:
        self.writers = writers
        self.period = period

    def after_step(self) -> None:
        if _period_reached(self.trainer, self.period):
            for writer in self.writers:
                writer.write(self.trainer.storage, self.trainer.epoch)

    def after_train(self) -> None:
        for writer in self.writers:
            writer.close()


class ProgressBar(HookBase):
    """A tqdm bar over iterations on the main process."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar = None

    def before_train(self) -> None:
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=self.trainer.max_iter, initial=self.trainer.start_iter,
                             desc="train", unit="it", dynamic_ncols=True, leave=False)

    def after_step(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            latest = self.trainer.storage.latest()
            if "total_loss" in latest:
                self._bar.set_postfix(loss=f"{latest['total_loss'][0]:.3f}", epoch=self.trainer.epoch)

    def after_train(self) -> None:
        if self._bar is not None:
            self._bar.close()


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches, num_iters: int) -> int:
    """Recompute BatchNorm running statistics as the plain average over ``num_iters`` batches.

    The model runs in training mode (so BN uses batch statistics); with ``momentum=None`` PyTorch
    keeps a cumulative average, i.e. every batch counts equally. Returns the number of batches used.
    A BatchNorm that sees no batch in training mode keeps its statistics: e.g. a distiller's EMA
    teacher, which a model keeps in eval mode and whose statistics come from its own averaging.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    used = 0
    try:
        for batch in batches:
            if used == num_iters:
                break
            model(batch)
            used += 1
    finally:
        for norm, momentum, state in zip(norms, momenta, saved):
            norm.momentum = momentum
            if int(norm.num_batches_tracked) == 0:  # not run in training mode: not re-estimated
                norm.load_state_dict(state)
        model.train(was_training)
    if used < num_iters:
        logger.warning("PreciseBN: the data gave %d batches of the %d asked for", used, num_iters)
    return used


class PreciseBN(HookBase):
    """Before each evaluation, re-estimate BN statistics over ``num_iters`` batches (FastReID's PRECISE_BN).

    Batches come from their own loader (``make_batches``), so the training stream and its resume
    position are untouched. Labels are replaced by -1: the model treats them as unlabelled.
    """

    def __init__(self, period_iters: int, model: nn.Module, make_batches: Callable[[], object], num_iters: int) -> None:
        self.period_iters = period_iters
        self.model = model
        self.make_batches = make_batches
        self.num_iters = num_iters

    def after_step(self) -> None:
        if _period_reached(self.trainer, self.period_iters):
            logger.info("PreciseBN: re-estimating BatchNorm statistics over %d batches", self.num_iters)
            update_bn_stats(self.model, self.make_batches(), self.num_iters)
