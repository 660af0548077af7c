"""Optimizer construction: any ``torch.optim`` class by name, with FastReID's parameter groups."""
from __future__ import annotations

import inspect

import torch
from torch import nn

from omnireid.config import CfgNode, ConfigError

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(cfg: CfgNode, model: nn.Module) -> list[dict]:
    """One group per trainable parameter with its own LR and weight decay.

    - parameters under a module named ``heads`` get ``HEADS_LR_FACTOR``;
    - biases get ``BIAS_LR_FACTOR`` and ``WEIGHT_DECAY_BIAS``;
    - parameters of normalisation layers get ``WEIGHT_DECAY_NORM``.
    """
    solver = cfg.SOLVER
    groups, seen = [], set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            lr, decay = solver.BASE_LR, solver.WEIGHT_DECAY
            if isinstance(module, _NORM_TYPES):
                decay = solver.WEIGHT_DECAY_NORM
            if "heads" in full_name.split("."):
                lr *= solver.HEADS_LR_FACTOR
            if param_name == "bias":
                lr *= solver.BIAS_LR_FACTOR
                decay = solver.WEIGHT_DECAY_BIAS
            groups.append({"name": full_name, "params": [param], "lr": lr, "weight_decay": decay,
                           "initial_lr": lr})
    return groups


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPT`` names a ``torch.optim`` class (``SGD``, ``Adam``, ``AdamW``, ...)."""
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
    return optim_cls(groups, lr=cfg.SOLVER.BASE_LR, **kwargs)
