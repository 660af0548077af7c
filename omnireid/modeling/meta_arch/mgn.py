"""MGN, the Multiple Granularity Network (Wang et al., ACM MM 2018), laid out as FastReID's ``MGN``.

A ResNet-style trunk up to the first block of ``layer3`` is shared; three branches each own a copy
of the rest of ``layer3`` and of ``layer4``: ``b1`` (global; ``layer4`` as configured by
``LAST_STRIDE``) and ``b2`` / ``b3`` (``layer4`` at stride 1, whose maps are cut into 2 and 3
horizontal stripes). Eight heads (``b1``, ``b2``, ``b21``, ``b22``, ``b3``, ``b31``, ``b32``, ``b33``)
pool and embed the global maps and the stripes. Module names match FastReID's, so FastReID MGN
checkpoints map onto this model one to one.

Losses (as FastReID): every classification loss on each of the 8 heads, weighted 1/8; every metric
loss (triplet, circle, cosface, ...) on 5 features - the three global ones and the concatenated
stripes of ``b2`` and of ``b3`` - weighted 1/5. The eval feature concatenates the 8 head features
in FastReID's order.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from omnireid.modeling.backbones import build_backbone
from omnireid.modeling.heads import build_heads
from omnireid.modeling.losses import build_losses, required_outputs
from omnireid.utils.errors import ConfigError

from .image_model import ImageModel
from .registry import META_ARCH_REGISTRY

if TYPE_CHECKING:
    from omnireid.config import CfgNode

HEAD_NAMES = ("b1", "b2", "b21", "b22", "b3", "b31", "b32", "b33")
EVAL_ORDER = ("b1", "b2", "b3", "b21", "b22", "b31", "b32", "b33")  # FastReID's feature concatenation
# metric-loss features: name -> heads whose "features" are concatenated
METRIC_GROUPS = {"b1": ("b1",), "b2": ("b2",), "b3": ("b3",), "b22": ("b21", "b22"), "b33": ("b31", "b32", "b33")}
METRIC_INPUTS = {"features"}  # a loss reading only these is a metric loss (see MGN.losses)
CLASSIFICATION_WEIGHT = 1.0 / len(HEAD_NAMES)
METRIC_WEIGHT = 1.0 / len(METRIC_GROUPS)


def split_resnet_style(backbone: nn.Module) -> tuple[nn.Sequential, nn.Sequential, nn.Module]:
    """(shared trunk up to ``layer3[0]``, rest of ``layer3``, ``layer4``) of a ResNet-family backbone."""
    if not all(hasattr(backbone, f"layer{i}") for i in range(1, 5)) or len(backbone.layer3) < 2:
        raise ConfigError(f"MGN needs a ResNet-style backbone with layer1..layer4 (ResNet, ResNeXt, ResNeSt) and at "
                          f"least two blocks in layer3; got {type(backbone).__name__} (MODEL.BACKBONE.NAME)")
    stem = []
    for name, child in backbone.named_children():
        if name == "layer1":
            break
        stem.append(child)
    trunk = nn.Sequential(*stem, backbone.layer1, backbone.layer2, backbone.layer3[0])
    return trunk, nn.Sequential(*backbone.layer3[1:]), backbone.layer4


@META_ARCH_REGISTRY.register()
class MGN(ImageModel):
    """Three-branch, eight-head reID model; ``forward`` follows docs/design.md like ``Baseline``."""

    def __init__(self, *, backbone: nn.Module, neck1: nn.Module, neck2: nn.Module, neck3: nn.Module,
                 heads: dict[str, nn.Module], losses: Sequence[nn.Module], pixel_mean: Sequence[float],
                 pixel_std: Sequence[float]) -> None:
        super().__init__(pixel_mean, pixel_std)
        if set(heads) != set(HEAD_NAMES):
            raise ValueError(f"MGN needs heads {HEAD_NAMES}, got {sorted(heads)}")
        self.backbone = backbone
        self.b1, self.b2, self.b3 = neck1, neck2, neck3
        for name in HEAD_NAMES:
            self.add_module(f"{name}_head", heads[name])
        self.loss_modules = nn.ModuleList(losses)

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "MGN":
        full = build_backbone(cfg)
        trunk, res_conv4, res_g_conv5 = split_resnet_style(full)
        # the part branches keep the resolution: their layer4 is the stride-1 build with the same weights
        part_cfg = cfg.clone()
        part_cfg.defrost()
        part_cfg.MODEL.BACKBONE.LAST_STRIDE = 1
        part_cfg.MODEL.BACKBONE.PRETRAIN = False
        res_p_conv5 = split_resnet_style(build_backbone(part_cfg))[2]
        res_p_conv5.load_state_dict(res_g_conv5.state_dict())
        in_channels = full.out_channels
        return cls(
            backbone=trunk,
            neck1=nn.Sequential(copy.deepcopy(res_conv4), copy.deepcopy(res_g_conv5)),
            neck2=nn.Sequential(copy.deepcopy(res_conv4), copy.deepcopy(res_p_conv5)),
            neck3=nn.Sequential(copy.deepcopy(res_conv4), copy.deepcopy(res_p_conv5)),
            heads={name: build_heads(cfg, in_channels=in_channels) for name in HEAD_NAMES},
            losses=build_losses(cfg), pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD)

    def branch_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The eight feature maps fed to the eight heads (stripes cut along the height)."""
        shared = self.backbone(images)
        b2, b3 = self.b2(shared), self.b3(shared)
        b21, b22 = torch.chunk(b2, 2, dim=2)
        b31, b32, b33 = torch.chunk(b3, 3, dim=2)
        return {"b1": self.b1(shared), "b2": b2, "b21": b21, "b22": b22, "b3": b3, "b31": b31, "b32": b32, "b33": b33}

    def forward_outputs(self, images: torch.Tensor, targets: torch.Tensor | None = None
                        ) -> dict[str, dict[str, torch.Tensor]]:
        """Head output dicts by head name, whatever the train/eval mode."""
        maps = self.branch_maps(images)
        return {name: getattr(self, f"{name}_head").compute_outputs(maps[name], targets) for name in HEAD_NAMES}

    def losses(self, outputs: dict[str, dict[str, torch.Tensor]], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Classification losses on the 8 heads (x 1/8) and metric losses on the 5 groups (x 1/5).

        A loss whose declared ``required_outputs`` are only ``features`` is a metric loss, applied to
        the concatenated group features; any other loss reads the heads' full outputs.
        """
        metric_views = {group: {"features": torch.cat([outputs[h]["features"] for h in heads], dim=1)}
                        for group, heads in METRIC_GROUPS.items()}
        result: dict[str, torch.Tensor] = {}
        with torch.autocast(device_type=self.device.type, enabled=False):
            for loss in self.loss_modules:
                if set(required_outputs(loss)) <= METRIC_INPUTS:
                    for group, view in metric_views.items():
                        result[f"{loss.loss_name}_{group}"] = loss(view, targets) * METRIC_WEIGHT
                else:
                    for name in HEAD_NAMES:
                        result[f"{loss.loss_name}_{name}"] = loss(outputs[name], targets) * CLASSIFICATION_WEIGHT
        return result

    def forward(self, batch: dict | torch.Tensor) -> dict[str, torch.Tensor]:
        """Training: the loss dict; eval: ``{"features": the 8 head features concatenated}``."""
        images = self.preprocess_image(batch)
        if self.training:
            targets = self.prepare_targets(batch)
            return self.losses(self.forward_outputs(images, targets), targets)
        maps = self.branch_maps(images)
        features = [getattr(self, f"{name}_head")(maps[name])["features"] for name in EVAL_ORDER]
        return {"features": torch.cat(features, dim=1)}
