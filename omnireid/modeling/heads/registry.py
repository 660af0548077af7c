"""The head registry and its builder (``MODEL.HEADS.NAME``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from omnireid.utils.errors import UnknownNameError
from omnireid.utils.registry import Registry

if TYPE_CHECKING:
    from omnireid.config import CfgNode

HEAD_REGISTRY = Registry("head")
HEAD_REGISTRY.__doc__ = "Head classes with ``from_config(cfg, in_channels)``; they map a feature map to features/logits."


def build_heads(cfg: "CfgNode", in_channels: int | None = None) -> nn.Module:
    """Build the head registered as ``cfg.MODEL.HEADS.NAME``.

    ``in_channels`` is the backbone's ``out_channels``; when None, ``MODEL.BACKBONE.FEAT_DIM`` is used.
    """
    try:
        head_cls = HEAD_REGISTRY.get(cfg.MODEL.HEADS.NAME)
    except KeyError as exc:
        raise UnknownNameError(f"MODEL.HEADS.NAME: {exc.args[0]}") from None
    return head_cls.from_config(cfg, in_channels=in_channels)
