"""Pairwise (batch-level) circle loss and cosface loss (Sun et al., CVPR 2020), as in FastReID."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .distances import PairwiseBatch
from .registry import LOSS_REGISTRY, require_output

if TYPE_CHECKING:
    from omnireid.config import CfgNode

_EXCLUDED = -1e9  # logit of a pair that must not take part in a log-sum-exp


def _pairs(embedding: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine similarities with the positive (self excluded) and negative masks."""
    batch = PairwiseBatch(embedding, targets)
    sim = F.normalize(batch.anchors, dim=1) @ F.normalize(batch.candidates, dim=1).t()
    return sim, batch.is_pos & ~batch.is_self, batch.is_neg


def _unify(logit_p: torch.Tensor, logit_n: torch.Tensor, is_pos: torch.Tensor, is_neg: torch.Tensor) -> torch.Tensor:
    """``mean_i softplus(logsumexp_p + logsumexp_n)``: the unified pair-similarity loss."""
    logit_p = logit_p.masked_fill(~is_pos, _EXCLUDED)
    logit_n = logit_n.masked_fill(~is_neg, _EXCLUDED)
    return F.softplus(torch.logsumexp(logit_p, dim=1) + torch.logsumexp(logit_n, dim=1)).mean()


def pairwise_circle_loss(embedding: torch.Tensor, targets: torch.Tensor, margin: float = 0.25,
                         gamma: float = 128.0) -> torch.Tensor:
    """Circle loss on cosine similarities: positives pulled to ``1 - m``, negatives pushed to ``m``,
    each weighted by its (detached) distance from the optimum, ``[1 + m - s_p]_+`` / ``[s_n + m]_+``."""
    sim, is_pos, is_neg = _pairs(embedding, targets)
    detached = sim.detach()
    alpha_p = (1.0 + margin - detached).clamp(min=0.0)
    alpha_n = (detached + margin).clamp(min=0.0)
    logit_p = -gamma * alpha_p * (sim - (1.0 - margin))
    logit_n = gamma * alpha_n * (sim - margin)
    return _unify(logit_p, logit_n, is_pos, is_neg)


def pairwise_cosface_loss(embedding: torch.Tensor, targets: torch.Tensor, margin: float = 0.25,
                          gamma: float = 128.0) -> torch.Tensor:
    """Pairwise CosFace: ``softplus(logsumexp(-γ s_p) + logsumexp(γ (s_n + m)))`` per anchor."""
    sim, is_pos, is_neg = _pairs(embedding, targets)
    return _unify(-gamma * sim, gamma * (sim + margin), is_pos, is_neg)


class _PairwiseLoss(nn.Module):
    config_key = ""
    required_outputs = ("features",)

    def __init__(self, margin: float = 0.25, gamma: float = 128.0, scale: float = 1.0) -> None:
        super().__init__()
        self.margin, self.gamma, self.scale = float(margin), float(gamma), float(scale)

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "_PairwiseLoss":
        node = cfg.MODEL.LOSSES[cls.config_key]
        return cls(margin=node.MARGIN, gamma=node.GAMMA, scale=node.SCALE)


@LOSS_REGISTRY.register()
class CircleLoss(_PairwiseLoss):
    """Pairwise circle loss on the head's ``features`` (``MODEL.LOSSES.CIRCLE``)."""

    loss_name = "loss_circle"
    config_key = "CIRCLE"

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        features = require_output(outputs, "features", type(self).__name__)
        return pairwise_circle_loss(features, targets, self.margin, self.gamma) * self.scale


@LOSS_REGISTRY.register("Cosface", aliases=("CosFace",))
class Cosface(_PairwiseLoss):
    """Pairwise cosface loss on the head's ``features`` (``MODEL.LOSSES.COSFACE``)."""

    loss_name = "loss_cosface"
    config_key = "COSFACE"

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        features = require_output(outputs, "features", type(self).__name__)
        return pairwise_cosface_loss(features, targets, self.margin, self.gamma) * self.scale
