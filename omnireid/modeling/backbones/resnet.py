"""ResNet 18/34/50/101/152 with FastReID's reID options: IBN-a, SE, non-local blocks, last stride.

Parameter names follow torchvision's ``resnet*`` (``conv1``, ``bn1``, ``layer1.0.conv1``, ...), so a
torchvision ImageNet state dict loads directly into the plain network (IBN-a checkpoints published
with IBN-Net load into the ``WITH_IBN`` variant). The ImageNet classifier (``avgpool``/``fc``) is
not part of the backbone: it returns the ``layer4`` feature map.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import torch
from torch import nn

from omnireid.modeling.layers import IBN, NonLocal, SELayer, get_norm
from omnireid.utils.errors import ConfigError

from .backbone_utils import init_conv_bn, load_pretrained_backbone
from .registry import BACKBONE_REGISTRY

if TYPE_CHECKING:
    from omnireid.config import CfgNode



def _first_norm(planes: int, norm: str, with_ibn: bool) -> nn.Module:
    return IBN(planes, norm) if with_ibn else get_norm(norm, planes)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, norm: str = "BN", with_ibn: bool = False,
                 with_se: bool = False, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _first_norm(planes, norm, with_ibn)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = get_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes) if with_se else nn.Identity()
        self.downsample = downsample
        # Separate, not in-place: a forward pre-hook on it sees the block's pre-ReLU output.
        self.out_relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.out_relu(out + identity)

    @property
    def output_norm(self) -> nn.Module:
        """The norm whose output is added to the identity before ``out_relu`` (overhaul KD margins)."""
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 - 3x3 (strided, as torchvision's v1.5) - 1x1 convolutions with a residual (ResNet-50+)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, norm: str = "BN", with_ibn: bool = False,
                 with_se: bool = False, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        width = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _first_norm(planes, norm, with_ibn)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = get_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, width, 1, bias=False)
        self.bn3 = get_norm(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(width) if with_se else nn.Identity()
        self.downsample = downsample
        self.out_relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.out_relu(out + identity)

    @property
    def output_norm(self) -> nn.Module:
        """The norm whose output is added to the identity before ``out_relu`` (overhaul KD margins)."""
        return self.bn3


@dataclass(frozen=True)
class ResNetSpec:
    block: type[BasicBlock] | type[Bottleneck]
    blocks_per_stage: tuple[int, int, int, int]
    # Non-local blocks per stage, placed after the last blocks of the stage. 50x/101x are FastReID's
    # (AGW) positions; FastReID has none for 18x/34x/152x, here they follow the same pattern.
    non_local_per_stage: tuple[int, int, int, int]


# MODEL.BACKBONE.NL_TYPE -> fn(channels, norm): the non-local block inserted after a stage's blocks.
NON_LOCAL_TYPES = MappingProxyType({
    # Wang et al.: in_channels // 2 inner channels, softmax affinity.
    "embedded_gaussian": lambda channels, norm: NonLocal(channels, norm),
    # FastReID's AGW block as it is built (1 inner channel, dot-product affinity / positions): needed to
    # reproduce FastReID-trained checkpoints.
    "fastreid_dot_product": lambda channels, norm: NonLocal(channels, norm, reduction=channels,
                                                            embedded_gaussian=False),
})

RESNET_SPECS = MappingProxyType({
    "18x": ResNetSpec(BasicBlock, (2, 2, 2, 2), (0, 1, 1, 0)),
    "34x": ResNetSpec(BasicBlock, (3, 4, 6, 3), (0, 2, 3, 0)),
    "50x": ResNetSpec(Bottleneck, (3, 4, 6, 3), (0, 2, 3, 0)),
    "101x": ResNetSpec(Bottleneck, (3, 4, 23, 3), (0, 2, 9, 0)),
    "152x": ResNetSpec(Bottleneck, (3, 8, 36, 3), (0, 4, 12, 0)),
})


class ResNet(nn.Module):
    """ResNet trunk returning the ``layer4`` map; ``out_channels`` is its channel count.

    IBN-a replaces the first norm of every block in stages 1-3 (Pan et al.); SE gates every block;
    non-local blocks (``NL_1``..``NL_4``, FastReID's names) follow the last blocks of stages 2-3.
    ``last_stride=1`` keeps a twice larger final map, the usual reID choice.
    """

    def __init__(self, spec: ResNetSpec, last_stride: int = 1, norm: str = "BN", with_ibn: bool = False,
                 with_se: bool = False, with_nl: bool = False, stem_pool_ceil: bool = False,
                 nl_type: str = "embedded_gaussian") -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"MODEL.BACKBONE.LAST_STRIDE must be 1 or 2, got {last_stride}")
        if nl_type not in NON_LOCAL_TYPES:
            raise ConfigError(f"MODEL.BACKBONE.NL_TYPE must be one of {list(NON_LOCAL_TYPES)}, got {nl_type!r}")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = get_norm(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        # torchvision pads the stem max pool by 1; FastReID (Caffe style) pads 0 and rounds up: other windows
        # (and one row/column less when the stem map is odd), so FastReID checkpoints need their own form.
        self.maxpool = (nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True) if stem_pool_ceil
                        else nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        strides = (1, 2, 2, last_stride)
        ibn_per_stage = (with_ibn, with_ibn, with_ibn, False)
        for index, (planes, blocks, stride, ibn) in enumerate(
                zip((64, 128, 256, 512), spec.blocks_per_stage, strides, ibn_per_stage), start=1):
            self.add_module(f"layer{index}", self._make_stage(spec.block, planes, blocks, stride, norm, ibn, with_se))
        self.out_channels = 512 * spec.block.expansion
        init_conv_bn(self)
        # Built after the init above so their zero-initialised output norms stay zero.
        non_local = spec.non_local_per_stage if with_nl else (0, 0, 0, 0)
        for index, (planes, blocks, count) in enumerate(
                zip((64, 128, 256, 512), spec.blocks_per_stage, non_local), start=1):
            channels = planes * spec.block.expansion
            self.add_module(f"NL_{index}", nn.ModuleList(NON_LOCAL_TYPES[nl_type](channels, norm)
                                                         for _ in range(count)))
            setattr(self, f"NL_{index}_idx", tuple(range(blocks - count, blocks)))

    def _make_stage(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int,
                    norm: str, with_ibn: bool, with_se: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                get_norm(norm, planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, norm, with_ibn, with_se, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, norm, with_ibn, with_se) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for index, stage in enumerate(self.stages(), start=1):
            non_local = getattr(self, f"NL_{index}")
            positions = getattr(self, f"NL_{index}_idx")
            for block_index, block in enumerate(stage):
                x = block(x)
                if block_index in positions:
                    x = non_local[positions.index(block_index)](x)
        return x


@BACKBONE_REGISTRY.register(aliases=("resnet", "ResNet"))
def build_resnet_backbone(cfg: "CfgNode") -> ResNet:
    """ResNet from ``MODEL.BACKBONE.{DEPTH, LAST_STRIDE, NORM, WITH_IBN, WITH_SE, WITH_NL, PRETRAIN*}``.

    With ``PRETRAIN``, weights come from ``PRETRAIN_PATH`` or, when empty, from the pretrained-weights
    manifest entry ``resnet{18..152}`` (torchvision's ImageNet files) / ``resnet{N}_ibn_a``.
    """
    bcfg = cfg.MODEL.BACKBONE
    depth = bcfg.DEPTH
    if depth not in RESNET_SPECS:
        raise ConfigError(f"MODEL.BACKBONE.DEPTH {depth!r} is not a ResNet depth; choose one of {list(RESNET_SPECS)}")
    model = ResNet(RESNET_SPECS[depth], last_stride=bcfg.LAST_STRIDE, norm=bcfg.NORM, with_ibn=bcfg.WITH_IBN,
                   with_se=bcfg.WITH_SE, with_nl=bcfg.WITH_NL, stem_pool_ceil=bcfg.STEM_POOL_CEIL,
                   nl_type=bcfg.NL_TYPE)
    # PRETRAIN_PATH, else the manifest file (omnireid/modeling/weights.py): torchvision's ImageNet
    # weights, or IBN-Net's release for IBN-a; their classifier ("fc.") is not part of the backbone.
    manifest_name = f"resnet{depth.rstrip('x')}" + ("_ibn_a" if bcfg.WITH_IBN else "")
    load_pretrained_backbone(model, cfg, manifest_name, ignore_prefixes=("fc.",))
    return model
