"""ResNeSt (Zhang et al., "ResNeSt: Split-Attention Networks", 2020) in FastReID's configuration.

Radix 2, cardinality 1, bottleneck width 64, deep stem (three 3x3 convolutions), average-pool
downsampling in the shortcut ("avg down") and in the block ("avd", after the 3x3 split-attention
convolution). Parameter names follow the official / FastReID checkpoints so their weights load as is.
With ``LAST_STRIDE 1`` the last stage keeps the resolution and its later blocks use dilation 2,
as FastReID does (so FastReID-trained ResNeSt checkpoints give the same features).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnireid.modeling.layers import get_norm
from omnireid.utils.errors import ConfigError

from .backbone_utils import choose_variant, init_conv_bn, load_pretrained_backbone
from .registry import BACKBONE_REGISTRY


class SplitAttentionConv(nn.Module):
    """A grouped convolution producing ``radix`` feature splits, fused by a softmax attention over splits.

    The attention is computed from the globally pooled sum of the splits (``fc1 -> norm -> ReLU -> fc2``)
    and normalised across the radix dimension within each cardinal group.
    """

    def __init__(self, in_channels: int, channels: int, stride: int, dilation: int, norm: str,
                 radix: int = 2, cardinality: int = 1, reduction_factor: int = 4) -> None:
        super().__init__()
        if radix < 1:
            raise ValueError(f"radix must be >= 1, got {radix}")
        inter_channels = max(in_channels * radix // reduction_factor, 32)
        self.radix = radix
        self.cardinality = cardinality
        self.channels = channels
        self.conv = nn.Conv2d(in_channels, channels * radix, kernel_size=3, stride=stride, padding=dilation,
                              dilation=dilation, groups=cardinality * radix, bias=False)
        self.bn0 = get_norm(norm, channels * radix)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, inter_channels, kernel_size=1, groups=cardinality)
        self.bn1 = get_norm(norm, inter_channels)
        self.fc2 = nn.Conv2d(inter_channels, channels * radix, kernel_size=1, groups=cardinality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn0(self.conv(x)))
        batch = x.shape[0]
        splits = torch.split(x, self.channels, dim=1) if self.radix > 1 else (x,)
        pooled = F.adaptive_avg_pool2d(sum(splits), 1)
        logits = self.fc2(self.relu(self.bn1(self.fc1(pooled))))
        if self.radix == 1:
            return x * torch.sigmoid(logits)
        # (N, cardinality, radix, C/cardinality) -> softmax over radix -> radix-major channel order
        attention = logits.reshape(batch, self.cardinality, self.radix, -1).transpose(1, 2).softmax(dim=1)
        attention = attention.reshape(batch, -1, 1, 1)
        weights = torch.split(attention, self.channels, dim=1)
        return sum(w * s for w, s in zip(weights, splits))


class ResNeStBottleneck(nn.Module):
    """1x1 -> split-attention 3x3 (-> 3x3 average pool when striding) -> 1x1, plus the shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, norm: str, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, radix: int = 2, cardinality: int = 1,
                 bottleneck_width: int = 64, avd: bool = False) -> None:
        super().__init__()
        group_width = int(planes * (bottleneck_width / 64.0)) * cardinality
        self.conv1 = nn.Conv2d(inplanes, group_width, kernel_size=1, bias=False)
        self.bn1 = get_norm(norm, group_width)
        # "avd": the spatial reduction is an average pool after the 3x3 conv instead of a strided conv
        self.avd_layer = nn.AvgPool2d(3, stride, padding=1) if avd else None
        self.conv2 = SplitAttentionConv(group_width, group_width, stride=1 if avd else stride,
                                        dilation=dilation, norm=norm, radix=radix, cardinality=cardinality)
        self.conv3 = nn.Conv2d(group_width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = get_norm(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if self.avd_layer is not None:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


@dataclass(frozen=True)
class ResNeStSpec:
    blocks_per_stage: tuple[int, int, int, int]
    stem_width: int


RESNEST_SPECS: dict[str, ResNeStSpec] = {
    "50x": ResNeStSpec((3, 4, 6, 3), 32),
    "101x": ResNeStSpec((3, 4, 23, 3), 64),
    "200x": ResNeStSpec((3, 24, 36, 3), 64),
    "269x": ResNeStSpec((3, 30, 48, 8), 64),
}


class ResNeSt(nn.Module):
    """ResNeSt-D backbone returning the last stage's feature map (``out_channels`` = 2048)."""

    def __init__(self, blocks_per_stage: tuple[int, ...], stem_width: int = 32, last_stride: int = 1,
                 norm: str = "BN", radix: int = 2, cardinality: int = 1, bottleneck_width: int = 64,
                 base_width: int = 64) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"MODEL.BACKBONE.LAST_STRIDE must be 1 or 2 for ResNeSt, got {last_stride}")
        self._block_kwargs = dict(radix=radix, cardinality=cardinality, bottleneck_width=bottleneck_width)
        self.inplanes = stem_width * 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, stride=2, padding=1, bias=False),
            get_norm(norm, stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, stem_width, 3, stride=1, padding=1, bias=False),
            get_norm(norm, stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, stem_width * 2, 3, stride=1, padding=1, bias=False),
        )
        self.bn1 = get_norm(norm, self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        w = base_width
        self.layer1 = self._make_layer(w, blocks_per_stage[0], 1, 1, norm, first_block_avd=False)
        self.layer2 = self._make_layer(w * 2, blocks_per_stage[1], 2, 1, norm)
        self.layer3 = self._make_layer(w * 4, blocks_per_stage[2], 2, 1, norm)
        self.layer4 = self._make_layer(w * 8, blocks_per_stage[3], last_stride, 2 if last_stride == 1 else 1, norm)
        self.out_channels = w * 8 * ResNeStBottleneck.expansion
        init_conv_bn(self)

    def _make_layer(self, planes: int, num_blocks: int, stride: int, dilation: int, norm: str,
                    first_block_avd: bool = True) -> nn.Sequential:
        out_channels = planes * ResNeStBottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_channels:
            # "avg down": pool first, then a 1x1 conv, so the shortcut sees every input position
            pool = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if dilation == 1
                    else nn.AvgPool2d(1, 1, ceil_mode=True, count_include_pad=False))
            downsample = nn.Sequential(pool, nn.Conv2d(self.inplanes, out_channels, 1, bias=False),
                                       get_norm(norm, out_channels))
        blocks = [ResNeStBottleneck(self.inplanes, planes, norm, stride=stride, dilation=1, downsample=downsample,
                                    avd=first_block_avd or stride > 1, **self._block_kwargs)]
        self.inplanes = out_channels
        blocks += [ResNeStBottleneck(self.inplanes, planes, norm, dilation=dilation, **self._block_kwargs)
                   for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


@BACKBONE_REGISTRY.register("build_resnest_backbone", aliases=("resnest",))
def build_resnest_backbone(cfg) -> ResNeSt:
    """``MODEL.BACKBONE.DEPTH``: 50x / 101x / 200x / 269x."""
    depth = choose_variant("MODEL.BACKBONE.DEPTH", cfg.MODEL.BACKBONE.DEPTH, RESNEST_SPECS)
    spec = RESNEST_SPECS[depth]
    model = ResNeSt(spec.blocks_per_stage, spec.stem_width, cfg.MODEL.BACKBONE.LAST_STRIDE, cfg.MODEL.BACKBONE.NORM)
    load_pretrained_backbone(model, cfg, f"resnest{depth[:-1]}", ignore_prefixes=("fc.",))
    return model
