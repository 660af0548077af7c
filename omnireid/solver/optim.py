"""Optimizer construction: any ``torch.optim`` class by name, with FastReID's LR / decay factors.

Parameters sharing the same options are merged into one group (FastReID used one group per
parameter), so the multi-tensor (``foreach``) and ``fused`` kernels update them in a few launches.
"""
from __future__ import annotations

import inspect
import logging

import torch
from torch import nn

from omnireid.config import CfgNode, ConfigError

logger = logging.getLogger(__name__)

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
# SOLVER.OPT_IMPL -> the constructor flags asked for; "auto" tries fused, then foreach.
OPT_IMPLS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}


def _param_options(cfg: CfgNode, module: nn.Module, full_name: str, param_name: str) -> tuple[float, float]:
    """(lr, weight decay) of one parameter after FastReID's factors."""
    solver = cfg.SOLVER
    lr, decay = solver.BASE_LR, solver.WEIGHT_DECAY
    if isinstance(module, _NORM_TYPES):
        decay = solver.WEIGHT_DECAY_NORM
    if "heads" in full_name.split("."):
        lr *= solver.HEADS_LR_FACTOR
    if param_name == "bias":
        lr *= solver.BIAS_LR_FACTOR
        decay = solver.WEIGHT_DECAY_BIAS
    return lr, decay


def param_groups(cfg: CfgNode, model: nn.Module) -> list[dict]:
    """One group per distinct (LR, weight decay) among the trainable parameters.

    - parameters under a module named ``heads`` get ``HEADS_LR_FACTOR``;
    - biases get ``BIAS_LR_FACTOR`` and ``WEIGHT_DECAY_BIAS``;
    - parameters of normalisation layers get ``WEIGHT_DECAY_NORM``.
    Each group lists its parameters' names under ``"names"`` (model order), for logging.
    """
    groups: dict[tuple[float, float], dict] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            lr, decay = _param_options(cfg, module, full_name, param_name)
            group = groups.setdefault((lr, decay), {"names": [], "params": [], "lr": lr, "weight_decay": decay,
                                                    "initial_lr": lr})
            group["names"].append(full_name)
            group["params"].append(param)
    return list(groups.values())


def _implementation_flags(cfg: CfgNode, optim_cls: type, params: list[torch.Tensor]) -> list[dict]:
    """Constructor flags to try in order for ``SOLVER.OPT_IMPL``."""
    choice = cfg.SOLVER.OPT_IMPL
    accepted = inspect.signature(optim_cls).parameters
    if choice == "auto":
        candidates = [OPT_IMPLS["fused"], OPT_IMPLS["foreach"], {}]
        floating = all(p.is_floating_point() for p in params)
        return [c for c in candidates if all(k in accepted for k in c) and (floating or "fused" not in c)]
    if choice not in OPT_IMPLS:
        raise ConfigError(f"SOLVER.OPT_IMPL {choice!r} is not one of {['auto', *OPT_IMPLS]}")
    flags = OPT_IMPLS[choice]
    if not all(k in accepted for k in flags):
        raise ConfigError(f"SOLVER.OPT_IMPL {choice!r} is not available for SOLVER.OPT {optim_cls.__name__!r}; "
                          "use 'auto'")
    return [flags]


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPT`` names a ``torch.optim`` class (``SGD``, ``Adam``, ``AdamW``, ...).

    ``SOLVER.OPT_IMPL`` picks the update kernel: ``auto`` (fused where the class and device support
    it, else foreach), ``fused``, ``foreach`` or ``for-loop``. Build the optimizer after moving the
    model to its device: fused kernels depend on it.
    """
    name = cfg.SOLVER.OPT
    optim_cls = getattr(torch.optim, name, None)
    if not (inspect.isclass(optim_cls) and issubclass(optim_cls, torch.optim.Optimizer)):
        known = sorted(n for n, c in vars(torch.optim).items()
                       if inspect.isclass(c) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer)
        raise ConfigError(f"SOLVER.OPT {name!r} is not a torch.optim optimizer; choose one of {known}")
    accepted = inspect.signature(optim_cls).parameters
    options = {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
    kwargs = {k: v for k, v in options.items() if k in accepted}
    if kwargs.get("nesterov") and not kwargs.get("momentum"):
        raise ConfigError("SOLVER.NESTEROV needs SOLVER.MOMENTUM > 0")
    groups = param_groups(cfg, model)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    params = [p for g in groups for p in g["params"]]
    attempts = _implementation_flags(cfg, optim_cls, params)
    for flags in attempts[:-1]:
        try:  # fresh group dicts: a failed constructor has already filled the defaults into them
            return optim_cls([dict(g) for g in groups], lr=cfg.SOLVER.BASE_LR, **kwargs, **flags)
        except (RuntimeError, ValueError) as err:  # e.g. no fused kernel for this device / dtype
            logger.info("%s with %s unavailable (%s); trying the next implementation", name, flags, err)
    return optim_cls(groups, lr=cfg.SOLVER.BASE_LR, **kwargs, **attempts[-1])
