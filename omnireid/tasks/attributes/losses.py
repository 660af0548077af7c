"""Attribute losses as functions of tensors: weighted BCE for binary attributes, CE for groups.

Why here and as functions: the registered loss modules, the distillation term and the tests all use
the same formulas; nothing in them assumes a device (FastAttr's version hard-coded ``"cuda"``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .schema import UNKNOWN_GROUP

REDUCTIONS = ("mean", "sample_sum")


def positive_ratios(attributes: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per attribute, the fraction of positives among the known labels (0 when none is known)."""
    attributes = np.asarray(attributes, dtype=np.float64)
    known = np.ones_like(attributes) if mask is None else np.asarray(mask, dtype=np.float64)
    counts = known.sum(0)
    return np.divide((attributes * known).sum(0), counts, out=np.zeros(attributes.shape[1]), where=counts > 0)


def attribute_weights(targets: torch.Tensor, pos_ratio: torch.Tensor) -> torch.Tensor:
    """FastAttr/PAR's per-label weights: ``exp(1 - r)`` on positives, ``exp(r)`` on negatives.

    Rare attributes (small ``r``) weigh their positives up to ``e`` times more than their negatives.
    """
    pos_ratio = pos_ratio.to(device=targets.device, dtype=targets.dtype)
    return torch.where(targets > 0.5, torch.exp(1.0 - pos_ratio), torch.exp(pos_ratio))


def weighted_bce_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                      pos_ratio: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy on attribute logits (N, A), weighted by :func:`attribute_weights`.

    Unknown labels (``mask == 0``) contribute nothing. ``reduction="mean"``: the average over known
    labels (FastAttr). ``"sample_sum"``: summed over attributes, averaged over images (PAR's
    ``size_sum``), i.e. about ``A`` times larger for the same errors.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logits.shape != targets.shape:
        raise ValueError(f"attribute logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    logits = logits.float()
    targets = targets.to(logits)
    mask = torch.ones_like(targets) if mask is None else mask.to(logits)
    per_label = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if pos_ratio is not None:
        per_label = per_label * attribute_weights(targets, pos_ratio)
    per_label = per_label * mask
    if reduction == "mean":
        return per_label.sum() / mask.sum().clamp(min=1.0)
    return per_label.sum() / max(logits.shape[0], 1)


def group_cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor, slices: Sequence[slice],
                             epsilon: float = 0.0) -> torch.Tensor:
    """Softmax cross-entropy of each categorical group, averaged over the groups.

    ``logits`` (N, C) hold every group's columns at ``slices``; ``labels`` (N, G) the class per group,
    ``-1`` = unknown (ignored). A group with no known label in the batch is left out of the average.
    """
    if labels.dim() != 2 or labels.shape[1] != len(slices):
        raise ValueError(f"group labels must be (N, {len(slices)}), got {tuple(labels.shape)}")
    labels = labels.to(device=logits.device, dtype=torch.long)
    terms = []
    for g, cols in enumerate(slices):
        target = labels[:, g]
        known = target != UNKNOWN_GROUP
        if bool(known.any()):
            terms.append(F.cross_entropy(logits[known, cols].float(), target[known], label_smoothing=epsilon))
    if not terms:
        return logits.sum() * 0.0  # keeps the graph (DDP needs every parameter used)
    return torch.stack(terms).mean()


def attribute_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, num_binary: int,
                                group_sizes: Sequence[int], temperature: float = 1.0) -> torch.Tensor:
    """Knowledge distillation on attribute logits (N, A + sum K), zero when the student matches.

    Binary attributes: the KL divergence between the teacher's and the student's Bernoulli
    distributions ``sigmoid(z / T)``, averaged over attributes; each group: the KL divergence of the
    softmaxes ``softmax(z / T)``; binary and group terms are averaged with equal weight per
    attribute/group. Multiplied by ``T^2`` (Hinton et al.) so gradients keep their size across ``T``.
    The teacher is detached.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student attribute logits {tuple(student.shape)} and teacher's {tuple(teacher.shape)} "
                         "differ: distillation needs the same attributes (same training data)")
    if temperature <= 0:
        raise ValueError(f"the distillation temperature must be positive, got {temperature}")
    s = student.float() / temperature
    t = teacher.detach().float() / temperature
    terms = []
    if num_binary:
        sb, tb = s[:, :num_binary], t[:, :num_binary]
        p = torch.sigmoid(tb)
        # KL(Bern(p) || Bern(q)) = p log p/q + (1-p) log (1-p)/(1-q), in log-sigmoid form
        kl = (p * (F.logsigmoid(tb) - F.logsigmoid(sb)) + (1 - p) * (F.logsigmoid(-tb) - F.logsigmoid(-sb)))
        terms.append(kl.mean(0))  # (A,)
    start = num_binary
    for size in group_sizes:
        ls, lt = F.log_softmax(s[:, start:start + size], 1), F.log_softmax(t[:, start:start + size], 1)
        terms.append((lt.exp() * (lt - ls)).sum(1).mean(0, keepdim=True))  # (1,)
        start += size
    if start != student.shape[1]:
        raise ValueError(f"attribute logits have {student.shape[1]} columns, expected {start} "
                         f"({num_binary} binary + groups {list(group_sizes)})")
    return torch.cat(terms).mean() * temperature ** 2
