"""The meta-architecture registry and ``build_model`` (``MODEL.META_ARCHITECTURE``)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from torch import nn

from omnireid.utils import comm
from omnireid.utils.registry import Registry

if TYPE_CHECKING:
    from omnireid.config import CfgNode

logger = logging.getLogger(__name__)

META_ARCH_REGISTRY = Registry("meta-architecture")
META_ARCH_REGISTRY.__doc__ = "Whole models with ``from_config(cfg)``; see docs/design.md (Models)."


def build_model(cfg: "CfgNode") -> nn.Module:
    """Build ``MODEL.META_ARCHITECTURE`` from ``cfg`` and move it to ``MODEL.DEVICE``.

    ``MODEL.HEADS.NUM_CLASSES`` must already hold the number of training identities when the
    model is to be trained with a classification loss (the trainer fills it from the data).
    """
    try:
        arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    except KeyError as exc:
        raise ValueError(f"MODEL.META_ARCHITECTURE: {exc.args[0]}") from None
    model = arch.from_config(cfg)
    model.to(comm.resolve_device(cfg.MODEL.DEVICE))
    logger.debug("Model:\n%s", model)
    return model
