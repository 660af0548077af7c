"""``MoCo``: Baseline plus a cross-batch memory queue of features (as FastReID's ``MoCo``).

The queue (``MODEL.QUEUE_SIZE`` L2-normalised features with their identity labels, filled
first-in-first-out with the features of every rank) lets a pairwise CosFace loss
(``softplus(logsumexp(-γ s_p) + logsumexp(γ (s_n + m)))``, γ=32, m=0.25 as FastReID) compare each
sample with many more positives and negatives than one batch holds (He et al., CVPR 2020; Wang et
al., "Cross-Batch Memory", CVPR 2020). Differences from FastReID, on purpose: empty slots (label -1)
take no part in the loss (FastReID counts its random initial entries as identity 0), and a
sample's own just-enqueued copy is masked where it really was written (FastReID masks the first
columns of the queue whatever the pointer).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from omnireid.modeling.backbones import build_backbone
from omnireid.modeling.heads import build_heads
from omnireid.modeling.losses import build_losses
from omnireid.utils import comm
from omnireid.utils.errors import ConfigError

from .baseline import Baseline
from .registry import META_ARCH_REGISTRY

if TYPE_CHECKING:
    from omnireid.config import CfgNode

_MASKED = -1e9  # finite, so logsumexp over an all-masked row keeps a zero gradient


class CrossBatchMemory(nn.Module):
    """A FIFO queue of normalised features and labels with a pairwise CosFace loss against it."""

    def __init__(self, dim: int, size: int, margin: float = 0.25, gamma: float = 32.0) -> None:
        super().__init__()
        if dim <= 0 or size <= 0:
            raise ConfigError(f"memory feature dim and MODEL.QUEUE_SIZE must be positive, got {dim}, {size}")
        self.size, self.margin, self.gamma = size, float(margin), float(gamma)
        self.register_buffer("queue", F.normalize(torch.randn(dim, size), dim=0))
        self.register_buffer("queue_label", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Write ``keys`` (already gathered) at the pointer, wrapping around; return the slots written."""
        if keys.shape[0] > self.size:
            raise ValueError(f"a global batch of {keys.shape[0]} does not fit MODEL.QUEUE_SIZE={self.size}")
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % self.size
        self.queue[:, slots] = keys.t().to(self.queue.dtype)
        self.queue_label[slots] = labels
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % self.size)
        return slots

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        query = F.normalize(features.float(), dim=1)
        keys = comm.all_gather_tensor(query.detach())
        labels = comm.all_gather_tensor(targets)
        slots = self.enqueue(keys, labels)
        own = slots[comm.get_rank() * query.shape[0]:(comm.get_rank() + 1) * query.shape[0]]
        return self.pairwise_cosface(query, targets, own)

    def pairwise_cosface(self, query: torch.Tensor, targets: torch.Tensor, own_slots: torch.Tensor) -> torch.Tensor:
        similarity = query @ self.queue  # (N, size)
        filled = (self.queue_label >= 0).unsqueeze(0)
        same = targets.view(-1, 1) == self.queue_label.view(1, -1)
        is_self = torch.zeros_like(same)
        is_self[torch.arange(query.shape[0], device=query.device), own_slots] = True
        is_pos = same & filled & ~is_self
        is_neg = ~same & filled
        logit_p = torch.where(is_pos, -self.gamma * similarity, torch.full_like(similarity, _MASKED))
        logit_n = torch.where(is_neg, self.gamma * (similarity + self.margin), torch.full_like(similarity, _MASKED))
        return F.softplus(torch.logsumexp(logit_p, dim=1) + torch.logsumexp(logit_n, dim=1)).mean()


@META_ARCH_REGISTRY.register()
class MoCo(Baseline):
    """Baseline whose loss dict also holds ``loss_mb``, the memory-queue loss on the head's ``features``."""

    def __init__(self, *, memory: CrossBatchMemory, **kwargs) -> None:
        super().__init__(**kwargs)
        self.memory = memory

    # The memory queue only serves the training loss: deployment builds and loads the Baseline.
    training_only_state = ("memory.",)

    @classmethod
    def deploy_from_config(cls, cfg: "CfgNode") -> Baseline:
        return Baseline.from_config(cfg)

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "MoCo":
        backbone = build_backbone(cfg)
        heads = build_heads(cfg, in_channels=backbone.out_channels)
        # the loss consumes outputs["features"]: the pooled map ("before") or the neck feature ("after")
        dim = heads.feat_dim if cfg.MODEL.HEADS.NECK_FEAT == "after" else backbone.out_channels
        return cls(memory=CrossBatchMemory(dim, cfg.MODEL.QUEUE_SIZE), backbone=backbone, heads=heads,
                   losses=build_losses(cfg), pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD)

    def losses(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor,
               batch: dict | None = None) -> dict[str, torch.Tensor]:
        result = super().losses(outputs, targets, batch)
        with torch.autocast(device_type=self.device.type, enabled=False):
            result["loss_mb"] = self.memory(outputs["features"], targets)
        return result
