"""ShuffleNetV2 0.5x / 1.0x / 1.5x / 2.0x (Ma et al., ECCV 2018), built on torchvision's units.

Parameter names are torchvision's (``conv1``, ``stage2``..``stage4``, ``conv5``), so its ImageNet
state dicts load as is (``fc.*`` ignored). The feature map is ``conv5``'s (1024 or 2048 channels).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.shufflenetv2 import ShuffleNetV2 as _TorchvisionShuffleNetV2

from .backbone_utils import choose_variant, convert_norms, load_pretrained_backbone
from .registry import BACKBONE_REGISTRY

# output channels of conv1, stage2, stage3, stage4, conv5 (paper, Table 5)
SHUFFLENET_CHANNELS: dict[str, tuple[int, int, int, int, int]] = {
    "0.5x": (24, 48, 96, 192, 1024),
    "1.0x": (24, 116, 232, 464, 1024),
    "1.5x": (24, 176, 352, 704, 1024),
    "2.0x": (24, 244, 488, 976, 2048),
}
SHUFFLENET_REPEATS = (4, 8, 4)


class ShuffleNetV2(nn.Module):
    """The convolutional trunk of ShuffleNetV2 (everything before global pooling)."""

    def __init__(self, channels: tuple[int, ...], norm: str = "BN") -> None:
        super().__init__()
        net = convert_norms(_TorchvisionShuffleNetV2(list(SHUFFLENET_REPEATS), list(channels)), norm)
        self.conv1, self.maxpool = net.conv1, net.maxpool
        self.stage2, self.stage3, self.stage4 = net.stage2, net.stage3, net.stage4
        self.conv5 = net.conv5
        self.out_channels = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.stage4(self.stage3(self.stage2(x))))


@BACKBONE_REGISTRY.register("build_shufflenetv2_backbone", aliases=("shufflenetv2",))
def build_shufflenetv2_backbone(cfg) -> ShuffleNetV2:
    """``MODEL.BACKBONE.DEPTH`` 0.5x / 1.0x / 1.5x / 2.0x."""
    size = choose_variant("MODEL.BACKBONE.DEPTH", cfg.MODEL.BACKBONE.DEPTH, SHUFFLENET_CHANNELS)
    model = ShuffleNetV2(SHUFFLENET_CHANNELS[size], cfg.MODEL.BACKBONE.NORM)
    load_pretrained_backbone(model, cfg, f"shufflenetv2_{size}", ignore_prefixes=("fc.",))
    return model
