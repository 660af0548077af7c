"""OSNet (Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019) and OSNet-IBN.

Each block runs four streams of 1, 2, 3 and 4 lightweight 3x3 convolutions (receptive fields of
3..9 pixels) and fuses them with a shared channel gate, so every block mixes scales per channel.
The IBN variant ("Learning Generalisable Omni-Scale Representations") uses instance norm in the stem
and after the residual sum of the first stage's blocks. Parameter names follow the published /
FastReID checkpoints; the classifier head of the ImageNet model is dropped, ``conv5`` is kept.
"""
from __future__ import annotations

import torch
from torch import nn

from omnireid.modeling.layers import get_norm

from .backbone_utils import choose_variant, init_conv_bn, load_pretrained_backbone
from .registry import BACKBONE_REGISTRY

OSNET_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "x1_0": (64, 256, 384, 512),
    "x0_75": (48, 192, 288, 384),
    "x0_5": (32, 128, 192, 256),
    "x0_25": (16, 64, 96, 128),
}


class ConvLayer(nn.Module):
    """conv -> norm (instance norm when ``instance_norm``) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str, stride: int = 1,
                 padding: int = 0, instance_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.InstanceNorm2d(out_channels, affine=True) if instance_norm else get_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1(nn.Module):
    """1x1 conv -> norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = get_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1Linear(nn.Module):
    """1x1 conv -> norm, no activation (the block's projection and shortcut)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = get_norm(norm, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LightConv3x3(nn.Module):
    """Pointwise 1x1 (linear) then depthwise 3x3 -> norm -> ReLU: a cheap 3x3 convolution."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels, bias=False)
        self.bn = get_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Per-channel sigmoid gates from the pooled input (pool -> fc1 -> ReLU -> fc2 -> sigmoid)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=True)
        self.gate_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.gate_activation(self.fc2(self.relu(self.fc1(self.global_avgpool(x)))))
        return x * gates


class OSBlock(nn.Module):
    """Omni-scale residual bottleneck: four multi-scale streams fused by one shared channel gate."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, instance_norm: bool = False,
                 bottleneck_reduction: int = 4) -> None:
        super().__init__()
        mid = out_channels // bottleneck_reduction
        if mid < 16:
            raise ValueError(f"OSBlock needs out_channels >= {16 * bottleneck_reduction} (gate reduction 16), "
                             f"got {out_channels}")
        self.conv1 = Conv1x1(in_channels, mid, norm)
        self.conv2a = LightConv3x3(mid, mid, norm)
        self.conv2b = nn.Sequential(*(LightConv3x3(mid, mid, norm) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LightConv3x3(mid, mid, norm) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LightConv3x3(mid, mid, norm) for _ in range(4)))
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1Linear(mid, out_channels, norm)
        self.downsample = Conv1x1Linear(in_channels, out_channels, norm) if in_channels != out_channels else None
        self.IN = nn.InstanceNorm2d(out_channels, affine=True) if instance_norm else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        fused = (self.gate(self.conv2a(x1)) + self.gate(self.conv2b(x1)) + self.gate(self.conv2c(x1))
                 + self.gate(self.conv2d(x1)))
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv3(fused) + identity
        if self.IN is not None:
            out = self.IN(out)
        return self.relu(out)


class OSNet(nn.Module):
    """Stem (7x7/2 + max pool), three OSBlock stages (the first two end with 1x1 + 2x2 average pool), conv5."""

    def __init__(self, channels: tuple[int, int, int, int], norm: str = "BN", with_ibn: bool = False,
                 blocks_per_stage: tuple[int, int, int] = (2, 2, 2)) -> None:
        super().__init__()
        self.conv1 = ConvLayer(3, channels[0], 7, norm, stride=2, padding=3, instance_norm=with_ibn)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = self._make_stage(blocks_per_stage[0], channels[0], channels[1], norm, True, with_ibn)
        self.conv3 = self._make_stage(blocks_per_stage[1], channels[1], channels[2], norm, True, False)
        self.conv4 = self._make_stage(blocks_per_stage[2], channels[2], channels[3], norm, False, False)
        self.conv5 = Conv1x1(channels[3], channels[3], norm)
        self.out_channels = channels[3]
        init_conv_bn(self)

    @staticmethod
    def _make_stage(num_blocks: int, in_channels: int, out_channels: int, norm: str, reduce_spatial_size: bool,
                    instance_norm: bool) -> nn.Sequential:
        layers: list[nn.Module] = [OSBlock(in_channels, out_channels, norm, instance_norm)]
        layers += [OSBlock(out_channels, out_channels, norm, instance_norm) for _ in range(1, num_blocks)]
        if reduce_spatial_size:
            layers.append(nn.Sequential(Conv1x1(out_channels, out_channels, norm), nn.AvgPool2d(2, stride=2)))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.conv4(self.conv3(self.conv2(x))))


@BACKBONE_REGISTRY.register("build_osnet_backbone", aliases=("osnet",))
def build_osnet_backbone(cfg) -> OSNet:
    """``MODEL.BACKBONE.DEPTH`` x1_0 / x0_75 / x0_5 / x0_25; ``WITH_IBN`` for OSNet-IBN."""
    bb = cfg.MODEL.BACKBONE
    depth = choose_variant("MODEL.BACKBONE.DEPTH", bb.DEPTH, OSNET_CHANNELS)
    model = OSNet(OSNET_CHANNELS[depth], bb.NORM, bb.WITH_IBN)
    load_pretrained_backbone(model, cfg, ("osnet_ibn_" if bb.WITH_IBN else "osnet_") + depth,
                             ignore_prefixes=("fc.", "classifier."))
    return model
