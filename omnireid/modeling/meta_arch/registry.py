"""The meta-architecture registry and ``build_model`` (``MODEL.META_ARCHITECTURE``)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from torch import nn

from omnireid.modeling.weights import load_weights
from omnireid.utils import comm
from omnireid.utils.errors import UnknownNameError
from omnireid.utils.registry import Registry

if TYPE_CHECKING:
    from omnireid.config import CfgNode

logger = logging.getLogger(__name__)

META_ARCH_REGISTRY = Registry("meta-architecture")
META_ARCH_REGISTRY.__doc__ = "Whole models with ``from_config(cfg)``; see docs/design.md (Models)."


def _architecture(cfg: "CfgNode") -> type:
    try:
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    except KeyError as exc:
        raise UnknownNameError(f"MODEL.META_ARCHITECTURE: {exc.args[0]}") from None


def build_model(cfg: "CfgNode", *, deploy: bool = False) -> nn.Module:
    """Build ``MODEL.META_ARCHITECTURE`` from ``cfg`` and move it to ``MODEL.DEVICE``.

    ``MODEL.HEADS.NUM_CLASSES`` must already hold the number of training identities when the
    model is to be trained with a classification loss (the trainer fills it from the data).

    ``deploy=True`` builds what inference runs. An architecture whose training needs more than it
    deploys (a distiller's teachers, connectors and EMA copy; MoCo's memory queue) declares
    ``deploy_from_config(cfg)`` (the model inference runs, e.g. the student ``Baseline``) and
    ``training_only_state`` (the state-dict prefixes only training uses; see
    :func:`training_only_state`). Building it for deployment touches none of the training-only files.
    """
    arch = _architecture(cfg)
    factory = getattr(arch, "deploy_from_config", arch.from_config) if deploy else arch.from_config
    model = factory(cfg)
    model.to(comm.resolve_device(cfg.MODEL.DEVICE))
    logger.debug("Model:\n%s", model)
    return model


def training_only_state(cfg: "CfgNode") -> tuple[str, ...]:
    """State-dict prefixes of ``MODEL.META_ARCHITECTURE``'s checkpoints that a deployed model does not have."""
    return tuple(getattr(_architecture(cfg), "training_only_state", ()))


def build_deployable_model(cfg: "CfgNode", weights: str) -> nn.Module:
    """``build_model(cfg, deploy=True)`` in eval mode with ``weights`` loaded strictly.

    Every weight of the deployed model must come from the file with its shape, and every entry of
    the file must be used, except the architecture's training-only state: deployment, evaluation
    and teachers never run on partly random weights.
    """
    model = build_model(cfg, deploy=True)
    load_weights(model, weights, strict=True, ignore_prefixes=training_only_state(cfg),
                 hint="use the config.yaml that training wrote next to its checkpoints: it records the architecture "
                      "and MODEL.HEADS.NUM_CLASSES the weights were trained with")
    return model.eval()
