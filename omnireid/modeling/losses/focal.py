"""Multi-class focal loss (Lin et al., ICCV 2017), FastReID's ``FocalLoss``."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .distances import at_least_float32
from .registry import LOSS_REGISTRY, require_output

if TYPE_CHECKING:
    from omnireid.config import CfgNode


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """``mean(-α (1 - p_y)^γ log p_y)``: down-weights samples that are already well classified."""
    log_p = F.log_softmax(at_least_float32(logits), dim=1).gather(1, targets[:, None]).squeeze(1)
    return (-alpha * (1.0 - log_p.exp()).pow(gamma) * log_p).mean()


@LOSS_REGISTRY.register()
class FocalLoss(nn.Module):
    """Focal loss on the head's ``cls_outputs``."""

    loss_name = "loss_focal"
    required_outputs = ("cls_outputs",)

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, scale: float = 1.0) -> None:
        super().__init__()
        self.alpha, self.gamma, self.scale = float(alpha), float(gamma), float(scale)

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "FocalLoss":
        fl = cfg.MODEL.LOSSES.FL
        return cls(alpha=fl.ALPHA, gamma=fl.GAMMA, scale=fl.SCALE)

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        logits = require_output(outputs, "cls_outputs", type(self).__name__)
        return focal_loss(logits, targets, self.alpha, self.gamma) * self.scale
