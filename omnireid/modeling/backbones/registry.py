"""The backbone registry and its builder (``MODEL.BACKBONE.NAME``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from omnireid.utils.errors import UnknownNameError
from omnireid.utils.registry import Registry

if TYPE_CHECKING:
    from omnireid.config import CfgNode

BACKBONE_REGISTRY = Registry("backbone")
BACKBONE_REGISTRY.__doc__ = """Backbone builders ``fn(cfg) -> nn.Module``.

The module returns a feature map ``(N, C, h, w)`` and exposes ``out_channels: int``.
"""


def build_backbone(cfg: "CfgNode") -> nn.Module:
    """Build the backbone registered as ``cfg.MODEL.BACKBONE.NAME``."""
    name = cfg.MODEL.BACKBONE.NAME
    try:
        builder = BACKBONE_REGISTRY.get(name)
    except KeyError as exc:
        from . import UNAVAILABLE_BACKBONE_MODULES  # filled once the package has imported its modules

        skipped = "".join(f" Module {module!r} was skipped: it needs the package {package!r}."
                          for module, package in UNAVAILABLE_BACKBONE_MODULES.items())
        raise UnknownNameError(f"MODEL.BACKBONE.NAME: {exc.args[0]}{skipped}") from None
    backbone = builder(cfg)
    out_channels = getattr(backbone, "out_channels", None)
    if not isinstance(out_channels, int) or out_channels <= 0:
        raise TypeError(f"backbone {name!r} must expose a positive int attribute 'out_channels', "
                        f"got {out_channels!r}")
    return backbone
