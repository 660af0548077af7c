"""Optimizers with FastReID's parameter groups, and warmup + main LR schedules."""
from .lr_scheduler import LR_SCHEDULE_REGISTRY, WARMUP_REGISTRY, build_lr_scheduler, lr_factor
from .optim import build_optimizer, param_groups

__all__ = ["LR_SCHEDULE_REGISTRY", "WARMUP_REGISTRY", "build_lr_scheduler", "build_optimizer", "lr_factor",
           "param_groups"]
