"""RepVGG (Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021).

Training form: each block sums a 3x3 conv+BN, a 1x1 conv+BN and (when shapes allow) a BN identity.
All three are linear in the input, so after training they fold into one 3x3 convolution with bias
(:meth:`RepVGG.switch_to_deploy`), giving a plain VGG-like stack with identical outputs.
``MODEL.BACKBONE.DEPLOY True`` builds that deploy form directly (to load deployed weights).
Training-form parameter names follow the official / FastReID checkpoints; the fused conv is
``rbr_reparam`` as in the official deploy checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from omnireid.modeling.layers import get_norm
from omnireid.utils.errors import ConfigError

from .backbone_utils import choose_variant, load_pretrained_backbone
from .registry import BACKBONE_REGISTRY


class ConvBN(nn.Sequential):
    """conv (no bias) -> norm; named ``conv``/``bn`` like the published checkpoints."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 groups: int, norm: str) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                                          bias=False))
        self.add_module("bn", get_norm(norm, out_channels))


def _fold_norm(kernel: torch.Tensor, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an (eval-mode) batch norm after a bias-free conv ``kernel`` into (kernel, bias)."""
    if not hasattr(norm, "running_mean") or norm.running_mean is None:
        raise TypeError(f"RepVGG re-parameterisation needs batch-norm statistics; got {type(norm).__name__}")
    std = (norm.running_var + norm.eps).sqrt()
    scale = norm.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), norm.bias - norm.running_mean * scale


class RepVGGBlock(nn.Module):
    """``ReLU(BN(conv3x3 x) + BN(conv1x1 x) + BN(x))`` in training form, ``ReLU(conv3x3 x + b)`` deployed."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, stride: int = 1, groups: int = 1,
                 deploy: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.groups = stride, groups
        self.nonlinearity = nn.ReLU()
        if deploy:
            self.rbr_reparam = nn.Conv2d(in_channels, out_channels, 3, stride, 1, groups=groups, bias=True)
        else:
            self.rbr_identity = get_norm(norm, in_channels) if in_channels == out_channels and stride == 1 else None
            self.rbr_dense = ConvBN(in_channels, out_channels, 3, stride, 1, groups, norm)
            self.rbr_1x1 = ConvBN(in_channels, out_channels, 1, stride, 0, groups, norm)

    @property
    def deployed(self) -> bool:
        return hasattr(self, "rbr_reparam")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            return self.nonlinearity(self.rbr_reparam(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.nonlinearity(out)

    @torch.no_grad()
    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equal to the sum of the three branches (norms in eval mode)."""
        kernel, bias = _fold_norm(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        k1, b1 = _fold_norm(self.rbr_1x1.conv.weight, self.rbr_1x1.bn)
        kernel = kernel + F.pad(k1, [1, 1, 1, 1])
        bias = bias + b1
        if self.rbr_identity is not None:
            per_group = self.in_channels // self.groups
            identity = torch.zeros_like(kernel)
            channels = torch.arange(self.in_channels, device=kernel.device)
            identity[channels, channels % per_group, 1, 1] = 1.0
            ki, bi = _fold_norm(identity, self.rbr_identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    def switch_to_deploy(self) -> None:
        if self.deployed:
            return
        kernel, bias = self.equivalent_kernel_bias()
        fused = nn.Conv2d(self.in_channels, self.out_channels, 3, self.stride, 1, groups=self.groups, bias=True)
        fused = fused.to(device=kernel.device, dtype=kernel.dtype)
        fused.weight.data.copy_(kernel)
        fused.bias.data.copy_(bias)
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity
        self.rbr_reparam = fused


@dataclass(frozen=True)
class RepVGGSpec:
    blocks_per_stage: tuple[int, int, int, int]
    width_multipliers: tuple[float, float, float, float]
    groups: int = 1  # applied to the odd-numbered ("optional group-wise") layers 2, 4, ..., 26
    grouped_layers: tuple[int, ...] = field(default=tuple(range(2, 27, 2)))


_A = (2, 4, 14, 1)
_B = (4, 6, 16, 1)
REPVGG_SPECS: dict[str, RepVGGSpec] = {
    "A0": RepVGGSpec(_A, (0.75, 0.75, 0.75, 2.5)),
    "A1": RepVGGSpec(_A, (1, 1, 1, 2.5)),
    "A2": RepVGGSpec(_A, (1.5, 1.5, 1.5, 2.75)),
    "B0": RepVGGSpec(_B, (1, 1, 1, 2.5)),
    "B1": RepVGGSpec(_B, (2, 2, 2, 4)),
    "B1g2": RepVGGSpec(_B, (2, 2, 2, 4), 2),
    "B1g4": RepVGGSpec(_B, (2, 2, 2, 4), 4),
    "B2": RepVGGSpec(_B, (2.5, 2.5, 2.5, 5)),
    "B2g2": RepVGGSpec(_B, (2.5, 2.5, 2.5, 5), 2),
    "B2g4": RepVGGSpec(_B, (2.5, 2.5, 2.5, 5), 4),
    "B3": RepVGGSpec(_B, (3, 3, 3, 5)),
    "B3g2": RepVGGSpec(_B, (3, 3, 3, 5), 2),
    "B3g4": RepVGGSpec(_B, (3, 3, 3, 5), 4),
}


class RepVGG(nn.Module):
    """Five stages of RepVGG blocks; ``out_channels`` = 512 x the last width multiplier."""

    def __init__(self, spec: RepVGGSpec, last_stride: int = 1, norm: str = "BN", deploy: bool = False) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"MODEL.BACKBONE.LAST_STRIDE must be 1 or 2 for RepVGG, got {last_stride}")
        mult = spec.width_multipliers
        in_planes = min(64, int(64 * mult[0]))
        self.stage0 = RepVGGBlock(3, in_planes, norm, stride=2, deploy=deploy)
        layer_index = 1
        for stage, (base, blocks, stride) in enumerate(zip((64, 128, 256, 512), spec.blocks_per_stage,
                                                           (2, 2, 2, last_stride)), 1):
            planes = int(base * mult[stage - 1])
            layers = []
            for block_stride in [stride] + [1] * (blocks - 1):
                groups = spec.groups if layer_index in spec.grouped_layers else 1
                layers.append(RepVGGBlock(in_planes, planes, norm, block_stride, groups, deploy))
                in_planes = planes
                layer_index += 1
            self.add_module(f"stage{stage}", nn.Sequential(*layers))
        self.out_channels = in_planes

    def switch_to_deploy(self) -> "RepVGG":
        """Fold every block into one 3x3 conv in place; outputs stay equal to the eval-mode training form."""
        for module in self.modules():
            if isinstance(module, RepVGGBlock):
                module.switch_to_deploy()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage0(x)
        return self.stage4(self.stage3(self.stage2(self.stage1(x))))


@BACKBONE_REGISTRY.register("build_repvgg_backbone", aliases=("repvgg",))
def build_repvgg_backbone(cfg) -> RepVGG:
    """``MODEL.BACKBONE.DEPTH`` A0..B3g4; ``DEPLOY True`` builds the fused (inference) form."""
    bb = cfg.MODEL.BACKBONE
    depth = choose_variant("MODEL.BACKBONE.DEPTH", bb.DEPTH, REPVGG_SPECS)
    model = RepVGG(REPVGG_SPECS[depth], bb.LAST_STRIDE, bb.NORM, deploy=bb.DEPLOY)
    load_pretrained_backbone(model, cfg, f"repvgg_{depth}" + ("_deploy" if bb.DEPLOY else ""),
                             ignore_prefixes=("linear.",))
    return model
