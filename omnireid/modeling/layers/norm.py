"""Normalisation layers chosen by name (``MODEL.BACKBONE.NORM`` / ``MODEL.HEADS.NORM``).

Names follow FastReID: ``BN``, ``syncBN``, ``GN``, ``FrozenBN``. Every builder takes the number of
channels and returns a module; :func:`get_norm` adds the weight/bias freezing and initial values the
BNNeck needs, for any norm that has affine parameters.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from omnireid.utils import comm
from omnireid.utils.errors import ConfigError, UnknownNameError
from omnireid.utils.registry import Registry

NORM_REGISTRY = Registry("norm layer")
NORM_REGISTRY.__doc__ = "Maps a norm name to ``fn(num_channels) -> nn.Module``."

NormBuilder = Callable[[int], nn.Module]


@NORM_REGISTRY.register("BN")
def _batch_norm(num_channels: int) -> nn.Module:
    return nn.BatchNorm2d(num_channels)


@NORM_REGISTRY.register("syncBN", aliases=("SyncBN",))
def _sync_batch_norm(num_channels: int) -> nn.Module:
    """SyncBatchNorm only helps (and only works) across CUDA processes; plain BN otherwise."""
    if comm.get_world_size() > 1 and torch.cuda.is_available():
        return nn.SyncBatchNorm(num_channels)
    return nn.BatchNorm2d(num_channels)


@NORM_REGISTRY.register("GN")
def _group_norm(num_channels: int) -> nn.Module:
    """GroupNorm with 32 groups (fewer when the channel count is not divisible by 32)."""
    groups = 32
    while num_channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, num_channels)


@NORM_REGISTRY.register("FrozenBN")
def _frozen_batch_norm(num_channels: int) -> nn.Module:
    """Fixed affine transform from (pretrained) statistics; nothing is learned or updated."""
    return FrozenBatchNorm2d(num_channels)


def get_norm(
    norm: str,
    num_channels: int,
    *,
    weight_init: float = 1.0,
    bias_init: float = 0.0,
    weight_freeze: bool = False,
    bias_freeze: bool = False,
) -> nn.Module:
    """Build the norm layer registered as ``norm`` for ``num_channels`` channels.

    ``weight_init``/``bias_init`` set the affine parameters; ``*_freeze`` stops them from learning
    (``requires_grad=False``), as the BNNeck does with its bias.
    """
    if not isinstance(norm, str) or not norm:
        raise ConfigError(f"norm layer name must be a non-empty string (one of {NORM_REGISTRY.names(True)}), "
                          f"got {norm!r}")
    try:
        builder: NormBuilder = NORM_REGISTRY.get(norm)
    except KeyError as exc:
        raise UnknownNameError(f"MODEL.*.NORM: {exc.args[0]}") from None
    layer = builder(num_channels)
    weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
    with torch.no_grad():
        if isinstance(weight, torch.Tensor):
            weight.fill_(weight_init)
        if isinstance(bias, torch.Tensor):
            bias.fill_(bias_init)
    if isinstance(weight, nn.Parameter) and weight_freeze:
        weight.requires_grad_(False)
    if isinstance(bias, nn.Parameter) and bias_freeze:
        bias.requires_grad_(False)
    return layer
