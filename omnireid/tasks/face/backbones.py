"""Face recognition backbones: iResNet (arcface_torch) and MobileFaceNet, with the embedding inside.

Both follow insightface's ``arcface_torch`` module layout, so its ``backbone.pth`` state dicts load
as they are through ``MODEL.BACKBONE.PRETRAIN_PATH``:

- iResNet (Duta et al., "Improved Residual Networks", and Deng et al., ArcFace): a 3x3 stride-1 stem
  (``conv1``, ``bn1``, ``prelu``), four stages of pre-activation basic blocks (``bn1 -> conv1 ->
  bn2 -> prelu -> conv2(stride) -> bn3`` + ``downsample``) at 64/128/256/512 channels, each halving
  the resolution, then ``bn2 -> flatten -> dropout -> fc -> features`` (a BatchNorm whose scale is
  fixed at 1): the 512-d embedding. Depths 18/34/50/100/200 are the block counts of arcface_torch.
- MobileFaceNet (Chen et al., 2018) as arcface_torch's ``get_mbf``: depthwise-separable residual
  stages, a 1x1 ``conv_sep`` to 512 channels and a global depthwise conv (``features``: GDC, linear,
  BatchNorm) giving the embedding.

The embedding is returned as an ``(N, D, 1, 1)`` map (``out_channels = D``), so the generic heads
apply to it with ``MODEL.HEADS.POOL_LAYER Identity`` (or ``Flatten``). The fully connected layer and
the global depthwise conv are sized from ``INPUT.SIZE_TRAIN`` (112x112 in the recipes: a 7x7 map),
which therefore must equal ``INPUT.SIZE_TEST``. ``MODEL.BACKBONE.NORM`` replaces every BatchNorm
(GroupNorm gives batch-independent outputs, used by the multi-process equivalence tests).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from omnireid.config.config import ConfigError
from omnireid.modeling.backbones import BACKBONE_REGISTRY
from omnireid.modeling.backbones.backbone_utils import (choose_variant, convert_norms, init_conv_bn,
                                                        load_pretrained_backbone)
from omnireid.modeling.layers import get_norm

# Blocks per stage (arcface_torch's iresnet18 ... iresnet200).
IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "18": (2, 2, 2, 2),
    "34": (3, 4, 6, 3),
    "50": (3, 4, 14, 3),
    "100": (3, 13, 30, 3),
    "200": (6, 26, 60, 6),
}
IRESNET_WIDTHS = (64, 128, 256, 512)


@dataclass(frozen=True)
class MobileFaceNetSpec:
    """Blocks per residual stage and the channel scale (arcface_torch ``get_mbf`` / ``get_mbf_large``)."""

    blocks: tuple[int, int, int, int]
    scale: int


MOBILEFACENET_SPECS: dict[str, MobileFaceNetSpec] = {
    "mbf": MobileFaceNetSpec((1, 4, 6, 2), 2),
    "mbf_large": MobileFaceNetSpec((2, 8, 12, 4), 4),
}


def downsampled(size: int, times: int) -> int:
    """Side length after ``times`` 3x3 stride-2 padding-1 convolutions (each gives ``ceil(n / 2)``)."""
    for _ in range(times):
        size = (size + 1) // 2
    return size


def embedding_norm(num_features: int, norm: str) -> nn.Module:
    """The final norm of the ``(N, D)`` embedding (arcface_torch's BatchNorm1d ``features``), scale fixed at 1.

    ``MODEL.BACKBONE.NORM`` chooses it like every other norm: BatchNorm becomes its 1-d form, GroupNorm
    a single group (a per-sample standardisation; one channel per group would zero the embedding).
    """
    layer = get_norm(norm, num_features, weight_freeze=True)
    if type(layer) is nn.BatchNorm2d:
        layer = nn.BatchNorm1d(num_features)
    elif isinstance(layer, nn.GroupNorm):
        layer = nn.GroupNorm(1, num_features)
    if not isinstance(layer, (nn.BatchNorm1d, nn.SyncBatchNorm, nn.GroupNorm)):
        raise ConfigError(f"MODEL.BACKBONE.NORM {norm!r} cannot normalise the face embedding; use BN, syncBN or GN")
    nn.init.ones_(layer.weight)
    layer.weight.requires_grad_(False)
    return layer


def _input_size(cfg) -> tuple[int, int]:
    train, test = tuple(cfg.INPUT.SIZE_TRAIN), tuple(cfg.INPUT.SIZE_TEST)
    if train != test:
        raise ConfigError(f"face backbones size their embedding layer from the input: INPUT.SIZE_TRAIN {list(train)} "
                          f"and INPUT.SIZE_TEST {list(test)} must be equal (112x112 for insightface data)")
    return int(train[0]), int(train[1])


def _embedding_dim(cfg) -> int:
    dim = int(cfg.MODEL.BACKBONE.FEAT_DIM)
    if dim <= 0:
        raise ConfigError(f"MODEL.BACKBONE.FEAT_DIM is the face embedding size and must be > 0, got {dim}")
    return dim


def _width(cfg) -> float:
    width = float(cfg.MODEL.BACKBONE.WIDTH_MULT)
    if not width > 0:
        raise ConfigError(f"MODEL.BACKBONE.WIDTH_MULT must be > 0, got {width}")
    return width


# ------------------------------------------------------------------------------------------------
# iResNet
# ------------------------------------------------------------------------------------------------
def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation basic block: ``bn1 -> conv1 -> bn2 -> prelu -> conv2(stride) -> bn3`` + shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.prelu = nn.PReLU(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """iResNet with arcface_torch's embedding: ``(N, 3, H, W) -> (N, num_features, 1, 1)``."""

    def __init__(self, layers: tuple[int, ...], input_size: tuple[int, int] = (112, 112), num_features: int = 512,
                 dropout: float = 0.0, width: float = 1.0, norm: str = "BN") -> None:
        super().__init__()
        if len(layers) != len(IRESNET_WIDTHS) or any(n < 1 for n in layers):
            raise ValueError(f"iResNet needs 4 stages of >= 1 block, got {layers}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"MODEL.BACKBONE.DROP_RATIO must be in [0, 1), got {dropout}")
        widths = [max(1, int(round(w * width))) for w in IRESNET_WIDTHS]
        self.conv1 = _conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.prelu = nn.PReLU(widths[0])
        in_channels = widths[0]
        for index, (blocks, channels) in enumerate(zip(layers, widths), start=1):
            stage = [IBasicBlock(in_channels, channels, stride=2)]
            stage += [IBasicBlock(channels, channels) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            in_channels = channels
        self.bn2 = nn.BatchNorm2d(in_channels)
        self.dropout = nn.Dropout(p=dropout)
        height, width_px = (downsampled(s, len(layers)) for s in input_size)
        self.fc = nn.Linear(in_channels * height * width_px, num_features)
        init_conv_bn(self)
        convert_norms(self, norm)
        self.features = embedding_norm(num_features, norm)
        self.input_size = tuple(input_size)
        self.out_channels = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))[:, :, None, None]


@BACKBONE_REGISTRY.register("build_iresnet_backbone", aliases=("iresnet",))
def build_iresnet_backbone(cfg) -> IResNet:
    """iResNet-``MODEL.BACKBONE.DEPTH`` (18/34/50/100/200; ``50x`` accepted) with a ``FEAT_DIM`` embedding,
    ``DROP_RATIO`` dropout before the fully connected layer, ``WIDTH_MULT`` channels and ``NORM``."""
    backbone = cfg.MODEL.BACKBONE
    depth = choose_variant("MODEL.BACKBONE.DEPTH", str(backbone.DEPTH).rstrip("x"), IRESNET_LAYERS)
    model = IResNet(IRESNET_LAYERS[depth], _input_size(cfg), _embedding_dim(cfg), float(backbone.DROP_RATIO),
                    _width(cfg), backbone.NORM)
    load_pretrained_backbone(model, cfg, f"iresnet{depth}")
    return model


# ------------------------------------------------------------------------------------------------
# MobileFaceNet
# ------------------------------------------------------------------------------------------------
class ConvBlock(nn.Module):
    """Conv (no bias) -> BatchNorm -> PReLU, as ``layers`` (arcface_torch's key layout)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int] = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1, activation: bool = True) -> None:
        super().__init__()
        modules: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding,
                                              groups=groups, bias=False), nn.BatchNorm2d(out_channels)]
        if activation:
            modules.append(nn.PReLU(out_channels))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand -> 3x3 depthwise (stride) -> linear 1x1 project; optional residual."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, stride: int = 1,
                 residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_channels, hidden),
            ConvBlock(hidden, hidden, 3, stride=stride, padding=1, groups=hidden),
            ConvBlock(hidden, out_channels, activation=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """``num_blocks`` stride-1 residual :class:`DepthWise` blocks."""

    def __init__(self, channels: int, num_blocks: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(channels, channels, hidden, residual=True) for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GlobalDepthwiseEmbedding(nn.Module):
    """arcface_torch's ``GDC``: a linear depthwise conv over the whole map, flatten, linear (no bias), norm."""

    def __init__(self, channels: int, map_size: tuple[int, int], num_features: int, norm: str) -> None:
        super().__init__()
        layers = nn.Sequential(ConvBlock(channels, channels, map_size, groups=channels, activation=False),
                               nn.Flatten(), nn.Linear(channels, num_features, bias=False))
        convert_norms(layers, norm)
        layers.append(embedding_norm(num_features, norm))
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet: ``(N, 3, H, W) -> (N, num_features, 1, 1)`` (arcface_torch ``get_mbf`` layout)."""

    def __init__(self, spec: MobileFaceNetSpec = MOBILEFACENET_SPECS["mbf"], input_size: tuple[int, int] = (112, 112),
                 num_features: int = 512, width: float = 1.0, norm: str = "BN") -> None:
        super().__init__()
        scale = spec.scale * width

        def ch(base: int) -> int:
            return max(1, int(round(base * scale)))

        def hidden(base: int) -> int:
            return max(1, int(round(base * width)))

        c64, c128 = ch(64), ch(128)
        stem: list[nn.Module] = [ConvBlock(3, c64, 3, stride=2, padding=1)]
        if spec.blocks[0] == 1:
            stem.append(ConvBlock(c64, c64, 3, padding=1, groups=c64))
        else:
            stem.append(Residual(c64, spec.blocks[0], hidden(128)))
        self.layers = nn.ModuleList(stem + [
            DepthWise(c64, c64, hidden(128), stride=2),
            Residual(c64, spec.blocks[1], hidden(128)),
            DepthWise(c64, c128, hidden(256), stride=2),
            Residual(c128, spec.blocks[2], hidden(256)),
            DepthWise(c128, c128, hidden(512), stride=2),
            Residual(c128, spec.blocks[3], hidden(256)),
        ])
        sep = max(1, int(round(512 * width)))
        self.conv_sep = ConvBlock(c128, sep)
        init_conv_bn(self)
        convert_norms(self, norm)
        map_size = tuple(downsampled(s, 4) for s in input_size)
        self.features = GlobalDepthwiseEmbedding(sep, map_size, num_features, norm)
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=1.0 / math.sqrt(m.in_features))
        self.input_size = tuple(input_size)
        self.out_channels = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))[:, :, None, None]


@BACKBONE_REGISTRY.register("build_mobilefacenet_backbone", aliases=("mobilefacenet",))
def build_mobilefacenet_backbone(cfg) -> MobileFaceNet:
    """MobileFaceNet ``MODEL.BACKBONE.DEPTH`` ``mbf`` (arcface_torch default) or ``mbf_large``, with a
    ``FEAT_DIM`` embedding, ``WIDTH_MULT`` channels and ``NORM``."""
    backbone = cfg.MODEL.BACKBONE
    variant = choose_variant("MODEL.BACKBONE.DEPTH", backbone.DEPTH, MOBILEFACENET_SPECS)
    model = MobileFaceNet(MOBILEFACENET_SPECS[variant], _input_size(cfg), _embedding_dim(cfg), _width(cfg),
                          backbone.NORM)
    load_pretrained_backbone(model, cfg, f"mobilefacenet_{variant}")
    return model
