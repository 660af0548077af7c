"""RegNetX / RegNetY (Radosavovic et al., "Designing Network Design Spaces", CVPR 2020).

Stage widths and depths are derived here from the RegNet parametrisation: per-block widths
``u_j = w0 + wa * j`` snapped to ``w0 * wm^k`` (multiples of 8), blocks of equal width form a stage,
and widths are made divisible by the group width. X blocks have no squeeze-excitation, Y blocks
have SE with ratio 1/4. The network modules are torchvision's (stem width 32, stride 2 per stage),
so torchvision's state dicts load as is; pycls / FastReID checkpoints (``stem.conv``, ``s1.b1.f.a``, ...)
are renamed on loading. Variant names follow FastReID (``800x`` = RegNetX-800MF).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.regnet import BlockParams
from torchvision.models.regnet import RegNet as _TorchvisionRegNet

from .backbone_utils import choose_variant, convert_norms, load_pretrained_backbone, set_stage_stride
from .registry import BACKBONE_REGISTRY


@dataclass(frozen=True)
class RegNetParams:
    depth: int
    w0: int
    wa: float
    wm: float
    group_width: int
    se_ratio: float | None = None


# pycls model-zoo parameters (RegNetX: no SE; RegNetY: SE 0.25)
_X = {
    "200": (13, 24, 36.44, 2.49, 8), "400": (22, 24, 24.48, 2.54, 16), "600": (16, 48, 36.97, 2.24, 24),
    "800": (16, 56, 35.73, 2.28, 16), "1600": (18, 80, 34.01, 2.25, 24), "3200": (25, 88, 26.31, 2.25, 48),
    "4000": (23, 96, 38.65, 2.43, 40), "6400": (17, 184, 60.83, 2.07, 56), "8000": (23, 80, 49.56, 2.88, 120),
    "12000": (19, 168, 73.36, 2.37, 112), "16000": (22, 216, 55.59, 2.1, 128), "32000": (23, 320, 69.86, 2.0, 168),
}
_Y = {
    "200": (13, 24, 36.44, 2.49, 8), "400": (16, 48, 27.89, 2.09, 8), "600": (15, 48, 32.54, 2.32, 16),
    "800": (14, 56, 38.84, 2.4, 16), "1600": (27, 48, 20.71, 2.65, 24), "3200": (21, 80, 42.63, 2.66, 24),
    "4000": (22, 96, 31.41, 2.24, 64), "6400": (25, 112, 33.22, 2.27, 72), "8000": (17, 192, 76.82, 2.19, 56),
    "12000": (19, 168, 73.36, 2.37, 112), "16000": (18, 200, 106.23, 2.48, 112), "32000": (20, 232, 115.89, 2.53, 232),
}
REGNET_PARAMS: dict[str, RegNetParams] = {
    **{f"{mf}x": RegNetParams(*p) for mf, p in _X.items()},
    **{f"{mf}y": RegNetParams(*p, se_ratio=0.25) for mf, p in _Y.items()},
}


@dataclass(frozen=True)
class RegNetStages:
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    group_widths: tuple[int, ...]


def regnet_stages(params: RegNetParams, quantum: int = 8) -> RegNetStages:
    """Stage depths/widths/group widths from (depth, w0, wa, wm, group width); bottleneck ratio 1."""
    if params.w0 <= 0 or params.wa < 0 or params.wm <= 1 or params.w0 % quantum:
        raise ValueError(f"invalid RegNet parameters {params}")
    block_widths = []
    for j in range(params.depth):
        linear = params.w0 + params.wa * j
        k = round(math.log(linear / params.w0) / math.log(params.wm))
        block_widths.append(int(round(params.w0 * params.wm ** k / quantum) * quantum))
    depths: list[int] = []
    widths: list[int] = []
    for width in block_widths:
        if widths and widths[-1] == width:
            depths[-1] += 1
        else:
            widths.append(width)
            depths.append(1)
    group_widths = [min(params.group_width, w) for w in widths]
    widths = [int(round(w / g) * g) for w, g in zip(widths, group_widths)]
    return RegNetStages(tuple(depths), tuple(widths), tuple(group_widths))


class RegNet(nn.Module):
    """RegNet trunk (``stem`` + ``trunk_output``) returning the last stage's map."""

    def __init__(self, params: RegNetParams, last_stride: int = 1, norm: str = "BN") -> None:
        super().__init__()
        stages = regnet_stages(params)
        block_params = BlockParams(depths=list(stages.depths), widths=list(stages.widths),
                                   group_widths=list(stages.group_widths),
                                   bottleneck_multipliers=[1.0] * len(stages.depths),
                                   strides=[2] * len(stages.depths), se_ratio=params.se_ratio)
        net = convert_norms(_TorchvisionRegNet(block_params), norm)
        self.stem, self.trunk_output = net.stem, net.trunk_output
        set_stage_stride(self.trunk_output[-1], last_stride)
        self.out_channels = stages.widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk_output(self.stem(x))


# pycls / FastReID block-internal names -> torchvision's (conv, norm) pairs inside Conv2dNormActivation
_PYCLS_BLOCK_NAMES = {"proj": "proj.0", "bn": "proj.1", "f.a": "f.a.0", "f.a_bn": "f.a.1", "f.b": "f.b.0",
                      "f.b_bn": "f.b.1", "f.c": "f.c.0", "f.c_bn": "f.c.1", "f.se.f_ex.0": "f.se.fc1",
                      "f.se.f_ex.2": "f.se.fc2"}
_PYCLS_BLOCK = re.compile(r"^s(\d+)\.b(\d+)\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def pycls_to_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename pycls-layout RegNet tensors (as in FastReID checkpoints) to this module's names; others pass."""
    out = {}
    for key, value in state.items():
        if key.startswith(("stem.conv.", "stem.bn.")):
            key = key.replace("stem.conv.", "stem.0.").replace("stem.bn.", "stem.1.")
        elif key.startswith("head.fc."):
            key = "fc." + key[len("head.fc."):]
        else:
            match = _PYCLS_BLOCK.match(key)
            if match and match.group(3) in _PYCLS_BLOCK_NAMES:
                stage, block, inner, leaf = match.groups()
                key = (f"trunk_output.block{stage}.block{stage}-{int(block) - 1}."
                       f"{_PYCLS_BLOCK_NAMES[inner]}.{leaf}")
        out[key] = value
    return out


@BACKBONE_REGISTRY.register("build_regnet_backbone", aliases=("regnet",))
def build_regnet_backbone(cfg) -> RegNet:
    """``MODEL.BACKBONE.DEPTH`` 200x..32000x / 200y..32000y (MF of the ImageNet model); ``LAST_STRIDE``."""
    variant = choose_variant("MODEL.BACKBONE.DEPTH", cfg.MODEL.BACKBONE.DEPTH, REGNET_PARAMS)
    model = RegNet(REGNET_PARAMS[variant], cfg.MODEL.BACKBONE.LAST_STRIDE, cfg.MODEL.BACKBONE.NORM)
    load_pretrained_backbone(model, cfg, f"regnet_{variant}", remap=pycls_to_torchvision, ignore_prefixes=("fc.",))
    return model
