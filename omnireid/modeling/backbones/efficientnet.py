"""EfficientNet b0-b7 (Tan & Le, ICML 2019) by compound scaling of the b0 layout, on torchvision's MBConv.

Width and depth coefficients are the paper's; channels are rounded to multiples of 8 and repeats
rounded up, as in the reference implementation. Parameter names are torchvision's, so its ImageNet
state dicts load as is (``classifier.*`` ignored). ``LAST_STRIDE 1`` removes the stride of the
last down-sampling stage (as FastReID's EffNet does). The feature map is the 1x1 head conv's output.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torchvision.models.efficientnet import EfficientNet as _TorchvisionEfficientNet
from torchvision.models.efficientnet import MBConvConfig

from .backbone_utils import choose_variant, convert_norms, load_pretrained_backbone, set_stage_stride
from .registry import BACKBONE_REGISTRY

# b0 stages: (expand ratio, kernel, stride, in channels, out channels, repeats)
_B0_STAGES = (
    (1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1),
)
_LAST_DOWNSAMPLING_STAGE = 6  # features[6] is the b0 stage 112 -> 192 with stride 2


@dataclass(frozen=True)
class EfficientNetScaling:
    width: float
    depth: float
    resolution: int
    dropout: float
    bn_eps: float = 1e-5  # the eps of torchvision's published weights (1e-3 for b5-b7)


EFFICIENTNET_SCALING: dict[str, EfficientNetScaling] = {
    "b0": EfficientNetScaling(1.0, 1.0, 224, 0.2),
    "b1": EfficientNetScaling(1.0, 1.1, 240, 0.2),
    "b2": EfficientNetScaling(1.1, 1.2, 260, 0.3),
    "b3": EfficientNetScaling(1.2, 1.4, 300, 0.3),
    "b4": EfficientNetScaling(1.4, 1.8, 380, 0.4),
    "b5": EfficientNetScaling(1.6, 2.2, 456, 0.4, 1e-3),
    "b6": EfficientNetScaling(1.8, 2.6, 528, 0.5, 1e-3),
    "b7": EfficientNetScaling(2.0, 3.1, 600, 0.5, 1e-3),
}


class EfficientNet(nn.Module):
    """EfficientNet trunk (stem, seven MBConv stages, 1x1 head conv) returning the head conv's map."""

    def __init__(self, scaling: EfficientNetScaling, last_stride: int = 1, norm: str = "BN",
                 stochastic_depth_prob: float = 0.2) -> None:
        super().__init__()
        stages = [MBConvConfig(*stage, width_mult=scaling.width, depth_mult=scaling.depth) for stage in _B0_STAGES]
        net = _TorchvisionEfficientNet(stages, dropout=scaling.dropout, stochastic_depth_prob=stochastic_depth_prob,
                                       norm_layer=partial(nn.BatchNorm2d, eps=scaling.bn_eps))
        self.features = convert_norms(net.features, norm)
        set_stage_stride(self.features[_LAST_DOWNSAMPLING_STAGE], last_stride)
        self.out_channels = self.features[-1][0].out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@BACKBONE_REGISTRY.register("build_effnet_backbone", aliases=("efficientnet", "build_efficientnet_backbone"))
def build_effnet_backbone(cfg) -> EfficientNet:
    """``MODEL.BACKBONE.DEPTH`` b0..b7; ``LAST_STRIDE``, ``NORM``."""
    variant = choose_variant("MODEL.BACKBONE.DEPTH", cfg.MODEL.BACKBONE.DEPTH, EFFICIENTNET_SCALING)
    model = EfficientNet(EFFICIENTNET_SCALING[variant], cfg.MODEL.BACKBONE.LAST_STRIDE, cfg.MODEL.BACKBONE.NORM)
    load_pretrained_backbone(model, cfg, f"efficientnet_{variant}", ignore_prefixes=("classifier.",))
    return model
