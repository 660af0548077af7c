"""Small helpers shared by the backbone builders: variant lookup, initialisation, pretrained loading."""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable, Mapping

import torch
from torch import nn

from omnireid.config.config import ConfigError
from omnireid.modeling.layers import get_norm
from omnireid.utils.errors import MissingDependencyError

from ..weights import get_weights_entry, resolve_pretrained_path
from .pretrained import load_pretrained_weights


def choose_variant(key: str, value: Any, table: Mapping[str, Any]) -> str:
    """Return ``value`` if it names an entry of ``table``, else raise a ConfigError listing the choices.

    Matching is exact first, then case-insensitive (``Large`` and ``large`` name the same MobileNetV3).
    """
    text = str(value)
    if text in table:
        return text
    folded = {name.lower(): name for name in table}
    if text.lower() in folded:
        return folded[text.lower()]
    raise ConfigError(f"{key}={value!r} is not a known variant; choose one of {sorted(table)}")


def init_conv_bn(module: nn.Module) -> None:
    """He (fan-out) initialisation for convolutions, unit/zero affine norms: the ResNet-family default.

    Call it before adding blocks with their own deliberate init (e.g. non-local's zero-init norm).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def load_pretrained_backbone(model: nn.Module, cfg, manifest_name: str,
                             remap: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
                             ignore_prefixes: tuple[str, ...] = ()) -> None:
    """When ``MODEL.BACKBONE.PRETRAIN`` is on, load ``PRETRAIN_PATH`` or else the manifest's file for ``manifest_name``.

    The manifest lookup verifies the checksum and names the file, folder and source URL when missing.
    """
    if not cfg.MODEL.BACKBONE.PRETRAIN:
        return
    path = resolve_pretrained_path(cfg.MODEL.BACKBONE.PRETRAIN_PATH, manifest_name)
    try:
        hint = f"Published weights: {get_weights_entry(manifest_name).url}"
    except KeyError:
        hint = ""
    load_pretrained_weights(model, path, hint=hint, ignore_prefixes=ignore_prefixes, remap=remap)


def require_timm() -> ModuleType:
    """Import timm lazily: it is an optional extra (``pip install omnireid[timm]``)."""
    try:
        return importlib.import_module("timm")
    except ImportError as exc:
        raise MissingDependencyError(
            "this backbone needs the optional dependency 'timm'; install it with `pip install omnireid[timm]` "
            "(or `pip install timm`)"
        ) from exc


def convert_norms(module: nn.Module, norm: str) -> nn.Module:
    """Replace every ``BatchNorm2d`` of a torchvision/timm-built network by ``get_norm(norm, C)``.

    With ``norm == "BN"`` the network is left as built (keeping the eps its published weights use).
    """
    if norm == "BN":
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, get_norm(norm, child.num_features))
        else:
            convert_norms(child, norm)
    return module


def set_stage_stride(stage: nn.Module, stride: int, key: str = "MODEL.BACKBONE.LAST_STRIDE") -> None:
    """Give every strided convolution (and pool) of ``stage`` the stride ``stride`` (1 keeps resolution)."""
    if stride not in (1, 2):
        raise ConfigError(f"{key} must be 1 or 2, got {stride}")
    for m in stage.modules():
        if isinstance(m, nn.Conv2d) and m.stride != (1, 1):
            m.stride = (stride, stride)
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)) and m.stride not in (1, (1, 1)):
            m.stride = stride
