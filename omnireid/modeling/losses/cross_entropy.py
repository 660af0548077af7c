"""Cross-entropy with (optionally adaptive) label smoothing, FastReID's ``CrossEntropyLoss``."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .distances import at_least_float32
from .registry import LOSS_REGISTRY, require_output

if TYPE_CHECKING:
    from omnireid.config import CfgNode


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.0,
                       alpha: float = 0.2) -> torch.Tensor:
    """Label-smoothed cross-entropy.

    The target distribution puts ``1 - ε`` on the true class and ``ε / (C - 1)`` on each other
    class (Szegedy et al.). ``ε < 0`` selects FastReID's adaptive smoothing: ``ε = α · p_y`` per
    sample, the model's own (detached) probability of the true class, so confident samples are
    regularised more. ``targets`` may also be class distributions ``(N, C)`` (MixUp / CutMix labels):
    each is smoothed the same way, ``q (1 - ε) + (1 - q) ε / (C - 1)``, which is the mix of the smoothed
    one-hot labels, and ``p_y`` becomes ``sum_c q_c p_c``. As in FastReID the sum is divided by the
    number of samples with a non-zero loss (at least 1).
    """
    num_classes = logits.shape[1]
    log_probs = F.log_softmax(at_least_float32(logits), dim=1)
    with torch.no_grad():
        if targets.dim() == 2:
            if targets.shape != logits.shape:
                raise ValueError(f"soft targets must have the logits' shape {tuple(logits.shape)}, got "
                                 f"{tuple(targets.shape)}")
            hard = targets.to(log_probs.dtype)
        else:
            hard = torch.zeros_like(log_probs).scatter_(1, targets[:, None], 1.0)
        if epsilon >= 0:
            smooth = torch.full((logits.shape[0], 1), float(epsilon), device=logits.device, dtype=log_probs.dtype)
        else:
            smooth = alpha * (log_probs.exp() * hard).sum(dim=1, keepdim=True)
        soft_targets = hard * (1.0 - smooth) + (1.0 - hard) * smooth / max(num_classes - 1, 1)
    per_sample = -(soft_targets * log_probs).sum(dim=1)
    nonzero = (per_sample.detach() != 0).sum().clamp(min=1)  # a tensor: no device sync
    return per_sample.sum() / nonzero


@LOSS_REGISTRY.register()
class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy on the head's ``cls_outputs`` (logits with margin)."""

    loss_name = "loss_cls"
    required_outputs = ("cls_outputs",)

    def __init__(self, epsilon: float = 0.0, alpha: float = 0.2, scale: float = 1.0) -> None:
        super().__init__()
        self.epsilon, self.alpha, self.scale = float(epsilon), float(alpha), float(scale)

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "CrossEntropyLoss":
        ce = cfg.MODEL.LOSSES.CE
        return cls(epsilon=ce.EPSILON, alpha=ce.ALPHA, scale=ce.SCALE)

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        logits = require_output(outputs, "cls_outputs", type(self).__name__)
        return cross_entropy_loss(logits, targets, self.epsilon, self.alpha) * self.scale
