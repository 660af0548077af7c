"""ResNeXt 32x4d (Xie et al., "Aggregated Residual Transformations", CVPR 2017) with optional IBN-a and non-local.

IBN-a replaces the first norm of every block in stages 1-3 (as in the IBN-Net paper; stage 4 keeps
plain BN to preserve discrimination). Non-local blocks follow the last blocks of stages 2 and 3
(2 and 3 of them), as in FastReID's AGW recipe; ``MODEL.BACKBONE.NL_TYPE`` picks the block form
shared with ResNet (``fastreid_dot_product`` reproduces FastReID's). Parameter names follow FastReID's ResNeXt
(``NL_2``/``NL_3`` lists, ``maxpool1``), so its checkpoints load as is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from omnireid.modeling.layers import IBN, get_norm
from omnireid.utils.errors import ConfigError

from .backbone_utils import choose_variant, init_conv_bn, load_pretrained_backbone
from .registry import BACKBONE_REGISTRY
from .resnet import NON_LOCAL_TYPES


class ResNeXtBottleneck(nn.Module):
    """1x1 -> grouped 3x3 (``cardinality`` groups of ``base_width * planes/64`` channels) -> 1x1."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, norm: str, with_ibn: bool, base_width: int, cardinality: int,
                 stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        width = int(math.floor(planes * (base_width / 64))) * cardinality
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = IBN(width, norm) if with_ibn else get_norm(norm, width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = get_norm(norm, width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = get_norm(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


@dataclass(frozen=True)
class ResNeXtSpec:
    blocks_per_stage: tuple[int, int, int, int]
    non_local_per_stage: tuple[int, int, int, int]


RESNEXT_SPECS: dict[str, ResNeXtSpec] = {
    "50x": ResNeXtSpec((3, 4, 6, 3), (0, 2, 3, 0)),
    "101x": ResNeXtSpec((3, 4, 23, 3), (0, 2, 3, 0)),
}


class ResNeXt(nn.Module):
    """ResNeXt backbone returning the last stage's feature map (``out_channels`` = 2048)."""

    def __init__(self, blocks_per_stage: tuple[int, ...], last_stride: int = 1, norm: str = "BN",
                 with_ibn: bool = False, non_local_per_stage: tuple[int, ...] = (0, 0, 0, 0),
                 base_width: int = 4, cardinality: int = 32, nl_type: str = "embedded_gaussian") -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"MODEL.BACKBONE.LAST_STRIDE must be 1 or 2 for ResNeXt, got {last_stride}")
        if nl_type not in NON_LOCAL_TYPES:
            raise ConfigError(f"MODEL.BACKBONE.NL_TYPE must be one of {list(NON_LOCAL_TYPES)}, got {nl_type!r}")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = get_norm(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        strides = (1, 2, 2, last_stride)
        for stage, (planes, blocks, stride) in enumerate(zip((64, 128, 256, 512), blocks_per_stage, strides), 1):
            layer = self._make_layer(planes, blocks, stride, norm, with_ibn and stage < 4, base_width, cardinality)
            self.add_module(f"layer{stage}", layer)
        self.out_channels = 512 * ResNeXtBottleneck.expansion
        init_conv_bn(self)
        # non-local blocks after the last ``n`` blocks of each stage; added after the init above so
        # their zero-initialised closing norm keeps them an identity at the start
        self.non_local_after: list[list[int]] = []
        for stage, (blocks, n_nl) in enumerate(zip(blocks_per_stage, non_local_per_stage), 1):
            channels = 64 * 2 ** (stage - 1) * ResNeXtBottleneck.expansion
            if n_nl:
                self.add_module(f"NL_{stage}", nn.ModuleList(NON_LOCAL_TYPES[nl_type](channels, norm)
                                                               for _ in range(n_nl)))
            self.non_local_after.append(sorted(blocks - 1 - i for i in range(n_nl)))

    def _make_layer(self, planes: int, blocks: int, stride: int, norm: str, with_ibn: bool, base_width: int,
                    cardinality: int) -> nn.Sequential:
        out_channels = planes * ResNeXtBottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_channels:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out_channels, 1, stride=stride, bias=False),
                                       get_norm(norm, out_channels))
        layers = [ResNeXtBottleneck(self.inplanes, planes, norm, with_ibn, base_width, cardinality, stride, downsample)]
        self.inplanes = out_channels
        layers += [ResNeXtBottleneck(self.inplanes, planes, norm, with_ibn, base_width, cardinality)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool1(self.relu(self.bn1(self.conv1(x))))
        for stage, nl_positions in enumerate(self.non_local_after, 1):
            layer = getattr(self, f"layer{stage}")
            non_locals = getattr(self, f"NL_{stage}", None)
            for index, block in enumerate(layer):
                x = block(x)
                if index in nl_positions:
                    x = non_locals[nl_positions.index(index)](x)
        return x


@BACKBONE_REGISTRY.register("build_resnext_backbone", aliases=("resnext",))
def build_resnext_backbone(cfg) -> ResNeXt:
    """``MODEL.BACKBONE.DEPTH`` 50x / 101x (32x4d); ``WITH_IBN``, ``WITH_NL`` / ``NL_TYPE``, ``LAST_STRIDE``."""
    bb = cfg.MODEL.BACKBONE
    depth = choose_variant("MODEL.BACKBONE.DEPTH", bb.DEPTH, RESNEXT_SPECS)
    spec = RESNEXT_SPECS[depth]
    model = ResNeXt(spec.blocks_per_stage, bb.LAST_STRIDE, bb.NORM, bb.WITH_IBN,
                    spec.non_local_per_stage if bb.WITH_NL else (0, 0, 0, 0), nl_type=bb.NL_TYPE)
    load_pretrained_backbone(model, cfg, f"resnext{depth[:-1]}_32x4d" + ("_ibn_a" if bb.WITH_IBN else ""),
                             ignore_prefixes=("fc.",))
    return model
