"""Learning-rate schedule: a warmup (per iteration) times a main schedule (per epoch), as FastReID.

The whole schedule is one pure function of the iteration, so resuming is exact: the scheduler's
only state is the iteration count.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from functools import partial
from typing import Callable

import torch

from omnireid.config import CfgNode
from omnireid.utils.registry import Registry

# fn(progress in [0, 1), factor) -> multiplier at the start of training.
WARMUP_REGISTRY = Registry("warmup method")
# fn(cfg, epoch) -> multiplier of BASE_LR.
LR_SCHEDULE_REGISTRY = Registry("LR schedule")


@WARMUP_REGISTRY.register("linear")
def _linear_warmup(progress: float, factor: float) -> float:
    return factor + (1.0 - factor) * progress


@WARMUP_REGISTRY.register("constant")
def _constant_warmup(progress: float, factor: float) -> float:
    return factor


@WARMUP_REGISTRY.register("exp")
def _exp_warmup(progress: float, factor: float) -> float:
    return factor ** (1.0 - progress)


@LR_SCHEDULE_REGISTRY.register("MultiStepLR")
def _multistep(cfg: CfgNode, epoch: int) -> float:
    """Multiply by ``GAMMA`` at each epoch listed in ``STEPS``."""
    return cfg.SOLVER.GAMMA ** bisect_right(sorted(cfg.SOLVER.STEPS), epoch)


@LR_SCHEDULE_REGISTRY.register("CosineAnnealingLR")
def _cosine(cfg: CfgNode, epoch: int) -> float:
    """Constant for ``DELAY_EPOCHS``, then cosine from BASE_LR to ``ETA_MIN_LR`` at ``MAX_EPOCH``."""
    delay, total = cfg.SOLVER.DELAY_EPOCHS, cfg.SOLVER.MAX_EPOCH
    if epoch < delay:
        return 1.0
    span = max(total - delay, 1)
    progress = min((epoch - delay) / span, 1.0)
    eta = cfg.SOLVER.ETA_MIN_LR / cfg.SOLVER.BASE_LR
    return eta + (1.0 - eta) * 0.5 * (1.0 + math.cos(math.pi * progress))


@LR_SCHEDULE_REGISTRY.register("PolyLR")
def _poly(cfg: CfgNode, epoch: int) -> float:
    """``(1 - epoch / MAX_EPOCH) ** 2`` (insightface arcface_torch's polynomial decay, per epoch here)."""
    return max(0.0, 1.0 - epoch / max(cfg.SOLVER.MAX_EPOCH, 1)) ** 2


def lr_factor(cfg: CfgNode, iteration: int, iters_per_epoch: int) -> float:
    """The multiplier of each group's base LR at ``iteration``."""
    main = LR_SCHEDULE_REGISTRY.get(cfg.SOLVER.SCHED)
    factor = main(cfg, iteration // max(iters_per_epoch, 1))
    warmup_iters = cfg.SOLVER.WARMUP_ITERS
    if iteration < warmup_iters:
        warmup = WARMUP_REGISTRY.get(cfg.SOLVER.WARMUP_METHOD)
        factor *= warmup(iteration / warmup_iters, cfg.SOLVER.WARMUP_FACTOR)
    return factor


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer,
                       iters_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler stepped once per iteration."""
    # Validate names now, not at the first step.
    LR_SCHEDULE_REGISTRY.get(cfg.SOLVER.SCHED)
    WARMUP_REGISTRY.get(cfg.SOLVER.WARMUP_METHOD)
    fn: Callable[[int], float] = partial(lr_factor, cfg.clone(), iters_per_epoch=iters_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
