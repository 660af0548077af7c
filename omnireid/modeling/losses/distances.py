"""Pairwise distances and cross-rank gathering shared by the metric losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from omnireid.utils import comm


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or float64 if it already is: losses are never computed in fp16/bf16."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||x_i - y_j||`` via the expanded square, clamped at 1e-12 before the root (finite gradients)."""
    squared = x.square().sum(1, keepdim=True) + y.square().sum(1)[None, :] - 2.0 * x @ y.t()
    return squared.clamp(min=1e-12).sqrt()


def cosine_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``2 - 2 cos(x_i, y_j)``: the squared euclidean distance of the L2-normalised vectors."""
    return 2.0 - 2.0 * F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()


class PairwiseBatch:
    """This rank's samples as anchors against the samples of every rank as candidates.

    Under DDP the embeddings are all-gathered *with* gradients, so that each rank's loss over its
    own anchors, averaged by DDP, has exactly the gradient of the loss over the global batch in one
    process (an identity's images stay on one rank, its negatives do not). Every rank must hold
    the same number of samples. Without distributed training, anchors and candidates coincide.
    """

    def __init__(self, embedding: torch.Tensor, targets: torch.Tensor) -> None:
        if embedding.dim() != 2 or targets.shape != embedding.shape[:1]:
            raise ValueError(f"expected embedding (N, D) and targets (N,), got {tuple(embedding.shape)} and "
                             f"{tuple(targets.shape)}")
        self.anchors = at_least_float32(embedding)
        self.anchor_targets = targets
        world_size = comm.get_world_size()
        if world_size > 1:
            self.candidates = comm.all_gather_with_grad(self.anchors)
            self.candidate_targets = comm.all_gather_tensor(targets)
            offset = comm.get_rank() * embedding.shape[0]
        else:
            self.candidates, self.candidate_targets, offset = self.anchors, targets, 0
        n = embedding.shape[0]
        self.is_pos = self.anchor_targets[:, None] == self.candidate_targets[None, :]
        self.is_neg = ~self.is_pos
        self.is_self = torch.zeros_like(self.is_pos)
        self.is_self[torch.arange(n, device=embedding.device), torch.arange(offset, offset + n,
                                                                             device=embedding.device)] = True
