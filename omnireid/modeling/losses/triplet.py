"""Triplet loss with batch-hard or softmax-weighted mining (Hermans et al. 2017; FastReID)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from omnireid.utils.errors import ConfigError

from .distances import PairwiseBatch, cosine_dist, euclidean_dist
from .registry import LOSS_REGISTRY, require_output

if TYPE_CHECKING:
    from omnireid.config import CfgNode

_FAR = 1e9  # pushes excluded pairs out of a min (FastReID's constant)


def hard_example_mining(dist: torch.Tensor, is_pos: torch.Tensor, is_neg: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Farthest positive and closest negative of each anchor (the anchor itself counts as a positive)."""
    dist_ap = (dist * is_pos).amax(dim=1)
    dist_an = (dist * is_neg + is_pos * _FAR).amin(dim=1)
    return dist_ap, dist_an


def _softmax_weights(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of ``values`` over the masked entries of each row (zero elsewhere)."""
    shifted = values - (values * mask).amax(dim=1, keepdim=True)
    exp = shifted.exp() * mask
    return exp / (exp.sum(dim=1, keepdim=True) + 1e-6)


def weighted_example_mining(dist: torch.Tensor, is_pos: torch.Tensor, is_neg: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax-weighted mean positive (weights ∝ exp(d)) and negative (∝ exp(-d)) distances.

    Every pair contributes, with far positives and close negatives weighted most (Ristani &
    Tomasi 2018, as in FastReID).
    """
    dist_ap = dist * is_pos
    dist_an = dist * is_neg
    weights_ap = _softmax_weights(dist_ap, is_pos)
    weights_an = _softmax_weights(-dist_an, is_neg)
    return (dist_ap * weights_ap).sum(dim=1), (dist_an * weights_an).sum(dim=1)


def triplet_loss(embedding: torch.Tensor, targets: torch.Tensor, margin: float = 0.3, norm_feat: bool = False,
                 hard_mining: bool = True) -> torch.Tensor:
    """Mean over anchors of ``[d_ap - d_an + margin]_+``, or ``log(1 + exp(d_ap - d_an))`` when
    ``margin`` is 0 (soft margin). Distances are euclidean, or ``2 - 2cos`` with ``norm_feat``."""
    batch = PairwiseBatch(embedding, targets)
    distance = cosine_dist if norm_feat else euclidean_dist
    dist = distance(batch.anchors, batch.candidates)
    is_pos, is_neg = batch.is_pos.to(dist.dtype), batch.is_neg.to(dist.dtype)
    mining = hard_example_mining if hard_mining else weighted_example_mining
    dist_ap, dist_an = mining(dist, is_pos, is_neg)
    if margin > 0:
        return F.relu(dist_ap - dist_an + margin).mean()
    return F.softplus(dist_ap - dist_an).mean()


@LOSS_REGISTRY.register()
class TripletLoss(nn.Module):
    """Triplet loss on the head's ``features``."""

    loss_name = "loss_triplet"
    required_outputs = ("features",)

    def __init__(self, margin: float = 0.3, norm_feat: bool = False, hard_mining: bool = True,
                 scale: float = 1.0) -> None:
        super().__init__()
        if margin < 0:
            raise ConfigError(f"MODEL.LOSSES.TRI.MARGIN must be >= 0 (0 selects the soft margin), got {margin}")
        self.margin, self.norm_feat, self.hard_mining, self.scale = float(margin), norm_feat, hard_mining, float(scale)

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "TripletLoss":
        tri = cfg.MODEL.LOSSES.TRI
        return cls(margin=tri.MARGIN, norm_feat=tri.NORM_FEAT, hard_mining=tri.HARD_MINING, scale=tri.SCALE)

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        features = require_output(outputs, "features", type(self).__name__)
        return triplet_loss(features, targets, self.margin, self.norm_feat, self.hard_mining) * self.scale
