"""Partial FC (An et al., CVPR 2022): margin softmax over sampled, model-parallel class centres.

The class centres are split across ranks (rank ``r`` holds rows ``shard_range(C, r, w)``); each step
every rank sees the embeddings and labels of the *whole* global batch (gathered), keeps the centres
of the labels it holds (positives) plus randomly sampled others up to ``sample_rate`` of its shard,
and computes margin logits against them. The softmax cross-entropy is then taken across ranks
(max and sum of exponentials all-reduced), so no rank ever materialises all classes.

With one process and ``sample_rate = 1`` this is exactly the full margin-softmax head.

Gradients: the sampled centres are rows of the full shard parameter (``weight[index]``), so a plain
``torch.optim`` optimizer updates the shard (unsampled rows get a zero gradient; momentum and weight
decay go on, as in insightface's ``PartialFC_V2``); nothing edits optimizer state by hand. The
embedding gradient returns to its rank through the gather and is multiplied by the world size to
undo DistributedDataParallel's averaging of the backbone gradients (every rank's loss is the whole
batch's loss, not a per-rank share).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from omnireid.modeling.heads import HEAD_REGISTRY
from omnireid.modeling.layers import build_classifier, build_pooling
from omnireid.modeling.losses import LOSS_REGISTRY
from omnireid.modeling.losses.distances import at_least_float32
from omnireid.modeling.losses.registry import require_output
from omnireid.utils import comm
from omnireid.utils.sharding import mark_sharded, shard_range

if TYPE_CHECKING:
    from omnireid.config import CfgNode

# Centres are initialised in blocks of this many classes, each from its own seed, so the full
# matrix is the same whatever the number of processes and each rank only draws its own blocks.
_INIT_BLOCK = 1 << 14


def sample_centres(positives: torch.Tensor, num_local: int, sample_rate: float) -> torch.Tensor:
    """Sorted local class indices to use this step: every positive, then random others up to
    ``max(int(sample_rate * num_local), #positives)``."""
    if sample_rate >= 1.0:
        return torch.arange(num_local, device=positives.device)
    num_sample = max(int(sample_rate * num_local), int(positives.numel()))
    score = torch.rand(num_local, device=positives.device)
    score[positives] = 2.0  # above every uniform draw: positives always kept
    return torch.topk(score, num_sample, sorted=False).indices.sort().values


class _ShardedSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits whose classes are split across ranks.

    ``targets`` index this rank's columns, ``-1`` where the target class is on another rank; each
    row's target must be on exactly one rank. Every rank returns the same loss; the backward pass is
    local (``(softmax - one_hot) / N`` on this rank's columns).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        distributed = comm.get_world_size() > 1
        logits = at_least_float32(logits)
        row_max = logits.max(dim=1).values
        if distributed:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
        exp = torch.exp(logits - row_max[:, None])
        denominator = exp.sum(dim=1)
        if distributed:
            dist.all_reduce(denominator)
        probs = exp / denominator[:, None]
        valid = targets >= 0
        index = targets.clamp(min=0)[:, None]
        target_prob = torch.where(valid, probs.gather(1, index).squeeze(1), 0.0)
        if distributed:
            dist.all_reduce(target_prob)
        ctx.save_for_backward(probs, targets)
        return -torch.log(target_prob.clamp(min=torch.finfo(probs.dtype).tiny)).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        probs, targets = ctx.saved_tensors
        valid = targets >= 0
        grad_logits = probs.clone()
        rows = torch.nonzero(valid).squeeze(1)
        grad_logits[rows, targets[rows]] -= 1.0
        return grad_logits * (grad / probs.shape[0]), None


def sharded_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over classes split across ranks (plain cross-entropy in one process)."""
    return _ShardedSoftmaxCrossEntropy.apply(logits, targets)


def _gather_embeddings(embeddings: torch.Tensor) -> torch.Tensor:
    """The global batch's embeddings (rank order); gradients flow back to each rank, times world size."""
    world = comm.get_world_size()
    if world == 1:
        return embeddings
    if embeddings.requires_grad:
        embeddings = embeddings.view_as(embeddings)
        embeddings.register_hook(lambda g: g * world)
    return comm.all_gather_with_grad(embeddings)


@HEAD_REGISTRY.register()
class PartialFCHead(nn.Module):
    """Embedding -> margin classifier over sampled, rank-sharded class centres (Partial FC).

    The backbone gives the embedding (face backbones: ``(N, D, 1, 1)``; ``pool_layer`` reduces any
    map). Outputs, in training mode with targets:

    - ``features`` / ``neck_features``: this rank's embeddings (for metric losses; eval feature);
    - ``cls_outputs``: margin logits of the *global* batch against this rank's sampled centres, and
      ``cls_targets``: the target's column among them (``-1`` where the class lives on another rank);
      :class:`PartialFCLoss` turns them into the cross-rank softmax loss;
    - ``pred_class_logits``: margin-free scaled logits over all classes (accuracy, distillation),
      present only when this rank holds every class and all are used (one process, rate 1).

    Without targets (eval, distillation teachers) ``pred_class_logits`` covers this rank's classes.
    """

    def __init__(self, *, in_channels: int, num_classes: int, cls_layer: str = "ArcSoftmax", scale: float = 64.0,
                 margin: float = 0.5, m1: float = 1.0, m3: float = 0.0, sample_rate: float = 1.0,
                 pool_layer: str = "Identity") -> None:
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"FACE.SAMPLE_RATE must be in (0, 1], got {sample_rate}")
        if num_classes <= 0:
            raise ValueError(f"PartialFCHead needs MODEL.HEADS.NUM_CLASSES > 0 (filled from the training data), "
                             f"got {num_classes}")
        world, rank = comm.get_world_size(), comm.get_rank()
        if num_classes < world:
            raise ValueError(f"Partial FC splits {num_classes} classes over {world} processes: use at most "
                             f"{num_classes} processes")
        self.num_classes = num_classes
        self.class_start, class_end = shard_range(num_classes, rank, world)
        self.num_local = class_end - self.class_start
        self.sample_rate = float(sample_rate)
        self.pool_layer = build_pooling(pool_layer)
        # One draw from the global RNG whatever the process count (the classifier's own init, whose size
        # depends on the shard, runs on a forked RNG and is overwritten).
        base_seed = int(torch.randint(0, 2**62, (1,)))
        with torch.random.fork_rng(devices=[]):
            self.classifier = build_classifier(cls_layer, in_channels, self.num_local, scale=scale, margin=margin,
                                               m1=m1, m3=m3)
        self._init_centres(self.classifier.weight, base_seed)
        mark_sharded(self.classifier.weight, num_classes)
        self.feat_dim = in_channels

    @classmethod
    def from_config(cls, cfg: "CfgNode", in_channels: int | None = None) -> "PartialFCHead":
        heads = cfg.MODEL.HEADS
        return cls(in_channels=in_channels or cfg.MODEL.BACKBONE.FEAT_DIM, num_classes=heads.NUM_CLASSES,
                   cls_layer=heads.CLS_LAYER, scale=heads.SCALE, margin=heads.MARGIN,
                   m1=cfg.FACE.MULTIPLICATIVE_MARGIN, m3=cfg.FACE.COSINE_MARGIN,
                   sample_rate=cfg.FACE.SAMPLE_RATE, pool_layer=heads.POOL_LAYER)

    @torch.no_grad()
    def _init_centres(self, weight: torch.Tensor, base_seed: int) -> None:
        """N(0, 0.01) centres identical for any process count: one seed per block of classes."""
        start, end = self.class_start, self.class_start + self.num_local
        generator = torch.Generator()
        for block in range(start // _INIT_BLOCK, (end - 1) // _INIT_BLOCK + 1):
            b0 = block * _INIT_BLOCK
            generator.manual_seed(base_seed + block)
            rows = torch.randn(_INIT_BLOCK, weight.shape[1], generator=generator) * 0.01
            lo, hi = max(start, b0), min(end, b0 + _INIT_BLOCK)
            weight[lo - start:hi - start] = rows[lo - b0:hi - b0]

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.pool_layer(features)
        return pooled.flatten(1)

    def compute_outputs(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        embeddings = self.embed(features)
        outputs = {"features": embeddings, "neck_features": embeddings}
        scale = self.classifier.scale
        if targets is None:
            outputs["pred_class_logits"] = self.classifier.base_logits(embeddings) * scale
            return outputs
        all_embeddings = _gather_embeddings(embeddings)
        all_targets = comm.all_gather_tensor(targets)
        local = all_targets - self.class_start
        here = (local >= 0) & (local < self.num_local)
        index = sample_centres(torch.unique(local[here]), self.num_local, self.sample_rate)
        full = index.numel() == self.num_classes
        cls_targets = torch.where(here, torch.searchsorted(index, local.clamp(0, self.num_local - 1)), -1)
        base = self.classifier.base_logits(all_embeddings, None if full else index)
        outputs["cls_outputs"] = self.classifier.apply_margin(base, cls_targets)
        outputs["cls_targets"] = cls_targets
        if full:
            outputs["pred_class_logits"] = base * scale
        return outputs

    def forward(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Eval: ``{"features": embedding (N, D)}`` (no identity logits: up to millions of classes, sharded,
        and not a face deployment output); training: :meth:`compute_outputs`."""
        if not self.training:
            return {"features": self.embed(features)}
        return self.compute_outputs(features, targets)


@LOSS_REGISTRY.register()
class PartialFCLoss(nn.Module):
    """Softmax cross-entropy of margin logits whose classes may be split across ranks (``loss_cls``).

    With :class:`PartialFCHead`'s ``cls_targets`` the logits are the global batch against this rank's
    sampled centres and the softmax is taken across ranks; without them (any other head) they are
    this rank's batch against every class and ``targets`` index them: plain cross-entropy.
    """

    loss_name = "loss_cls"
    required_outputs = ("cls_outputs",)

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = float(scale)

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "PartialFCLoss":
        return cls(scale=cfg.MODEL.LOSSES.CE.SCALE)

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        logits = require_output(outputs, "cls_outputs", type(self).__name__)
        if "cls_targets" in outputs:
            return sharded_cross_entropy(logits, outputs["cls_targets"]) * self.scale
        return F.cross_entropy(at_least_float32(logits), targets) * self.scale
