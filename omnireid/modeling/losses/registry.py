"""The loss registry and builder (``MODEL.LOSSES.NAME``).

A loss is an ``nn.Module`` class with ``from_config(cfg)``, a ``loss_name`` (its key in the loss
dict, FastReID's ``loss_cls``/``loss_triplet``/...), ``required_outputs`` (the head outputs it reads,
e.g. ``("cls_outputs",)`` or ``("features",)``: meta-architectures such as MGN route a loss by this
declaration) and ``forward(outputs, targets) -> Tensor``: a scalar already multiplied by its
configured ``SCALE``. ``outputs`` is the head's training dict.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from omnireid.utils.errors import ConfigError, UnknownNameError
from omnireid.utils.registry import Registry

if TYPE_CHECKING:
    from omnireid.config import CfgNode

LOSS_REGISTRY = Registry("loss")


def require_output(outputs: dict[str, torch.Tensor], key: str, loss_name: str) -> torch.Tensor:
    """``outputs[key]``, or an error saying which loss needs which head output."""
    if key not in outputs:
        extra = (" The head has no classifier: set MODEL.HEADS.NUM_CLASSES (> 0; the trainer fills it from "
                 "the training data)." if key == "cls_outputs" else "")
        raise KeyError(f"{loss_name} needs head output {key!r}; the head returned {sorted(outputs)}.{extra}")
    return outputs[key]


def required_outputs(loss: nn.Module) -> tuple[str, ...]:
    """The head outputs ``loss`` reads, as its class declares them (``required_outputs``)."""
    declared = getattr(loss, "required_outputs", None)
    if not isinstance(declared, tuple) or not declared or not all(isinstance(k, str) for k in declared):
        raise TypeError(f"{type(loss).__name__} must declare required_outputs, the head outputs it reads "
                        f"(a non-empty tuple of names such as ('features',)); got {declared!r}")
    return declared


def build_losses(cfg: "CfgNode") -> nn.ModuleList:
    """One module per entry of ``MODEL.LOSSES.NAME`` (in order); duplicate names are an error."""
    modules = []
    seen: dict[str, str] = {}
    for name in cfg.MODEL.LOSSES.NAME:
        try:
            loss_cls = LOSS_REGISTRY.get(name)
        except KeyError as exc:
            raise UnknownNameError(f"MODEL.LOSSES.NAME: {exc.args[0]}") from None
        loss = loss_cls.from_config(cfg)
        if loss.loss_name in seen:
            raise ConfigError(f"MODEL.LOSSES.NAME lists {seen[loss.loss_name]!r} and {name!r}, which both produce "
                              f"{loss.loss_name!r}")
        seen[loss.loss_name] = name
        modules.append(loss)
    return nn.ModuleList(modules)
