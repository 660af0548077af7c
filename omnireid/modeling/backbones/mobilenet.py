"""MobileNetV2 (Sandler et al., CVPR 2018) and MobileNetV3 large/small (Howard et al., ICCV 2019).

Built on torchvision's blocks (its modules are the reference implementation and its ImageNet state
dicts load as is, ``classifier.*`` being ignored). The V3 layer tables are written here from the
paper so the width multiplier applies to both sizes. The feature map is the output of ``features``
(1280 x max(1, width) channels for V2; 960 / 576 x width for V3 large / small).
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models.mobilenetv2 import MobileNetV2 as _TorchvisionMobileNetV2
from torchvision.models.mobilenetv3 import InvertedResidualConfig
from torchvision.models.mobilenetv3 import MobileNetV3 as _TorchvisionMobileNetV3

from omnireid.config.config import ConfigError

from .backbone_utils import choose_variant, convert_norms, load_pretrained_backbone
from .registry import BACKBONE_REGISTRY


class FeaturesBackbone(nn.Module):
    """Wraps a torchvision classifier's ``features`` trunk (keeping its parameter names)."""

    def __init__(self, features: nn.Sequential, out_channels: int) -> None:
        super().__init__()
        self.features = features
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _width_mult(cfg) -> float:
    width = float(cfg.MODEL.BACKBONE.WIDTH_MULT)
    if not width > 0:
        raise ConfigError(f"MODEL.BACKBONE.WIDTH_MULT must be > 0, got {width}")
    return width


def _last_conv_channels(features: nn.Sequential) -> int:
    return [m for m in features.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


@BACKBONE_REGISTRY.register("build_mobilenetv2_backbone", aliases=("mobilenetv2",))
def build_mobilenetv2_backbone(cfg) -> FeaturesBackbone:
    """MobileNetV2 with ``MODEL.BACKBONE.WIDTH_MULT`` (1.0, 0.75, 0.5, 0.35, ... any positive value)."""
    width = _width_mult(cfg)
    net = _TorchvisionMobileNetV2(width_mult=width)
    model = FeaturesBackbone(convert_norms(net.features, cfg.MODEL.BACKBONE.NORM), _last_conv_channels(net.features))
    load_pretrained_backbone(model, cfg, f"mobilenetv2_{width:g}x", ignore_prefixes=("classifier.",))
    return model


# (kernel, expanded channels, out channels, squeeze-excite, activation, stride) per bneck layer
_V3_TABLES: dict[str, tuple[tuple[int, int, int, bool, str, int], ...]] = {
    "large": (
        (3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
        (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
        (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
        (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
        (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1),
    ),
    "small": (
        (3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
        (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
        (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
        (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1),
    ),
}
_V3_LAST_CHANNEL = {"large": 1280, "small": 1024}  # classifier width (only used by the ImageNet head)


def mobilenetv3_settings(size: str, width: float = 1.0) -> list[InvertedResidualConfig]:
    """The bneck configurations of MobileNetV3-``size`` scaled by ``width``."""
    config = partial(InvertedResidualConfig, width_mult=width)
    settings, in_channels = [], 16
    for kernel, expanded, out, se, act, stride in _V3_TABLES[size]:
        settings.append(config(in_channels, kernel, expanded, out, se, act, stride, 1))
        in_channels = out
    return settings


@BACKBONE_REGISTRY.register("build_mobilenetv3_backbone", aliases=("mobilenetv3",))
def build_mobilenetv3_backbone(cfg) -> FeaturesBackbone:
    """MobileNetV3 with ``MODEL.BACKBONE.DEPTH`` Large / Small and ``WIDTH_MULT``."""
    size = choose_variant("MODEL.BACKBONE.DEPTH", cfg.MODEL.BACKBONE.DEPTH, _V3_TABLES)
    width = _width_mult(cfg)
    net = _TorchvisionMobileNetV3(mobilenetv3_settings(size, width), _V3_LAST_CHANNEL[size],
                                  norm_layer=partial(nn.BatchNorm2d, eps=0.001, momentum=0.01))
    model = FeaturesBackbone(convert_norms(net.features, cfg.MODEL.BACKBONE.NORM), _last_conv_channels(net.features))
    load_pretrained_backbone(model, cfg, f"mobilenetv3_{size}" + ("" if width == 1.0 else f"_{width:g}x"),
                             ignore_prefixes=("classifier.",))
    return model
