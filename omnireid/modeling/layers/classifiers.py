"""Classifier layers (``MODEL.HEADS.CLS_LAYER``), registered under FastReID's names.

Each classifier owns its class-weight matrix and separates two steps so callers can have both:

- :meth:`base_logits` - margin-free, unscaled logits (raw dot products for ``Linear``, cosines for
  the angular ones);
- :meth:`apply_margin` - the training-time logits with the class margin applied at each target and
  multiplied by ``scale`` (what cross-entropy sees).

``base_logits(x) * scale`` are the margin-free logits used for accuracy and distillation.
A target of ``-1`` means "no class on this rank/sample" and gets no margin (FastReID's convention).
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from omnireid.utils.errors import ConfigError, UnknownNameError
from omnireid.utils.registry import Registry

CLASSIFIER_REGISTRY = Registry("classifier layer")


class _TargetMask:
    """One-hot positions of valid (non-negative) targets, computed once per batch."""

    def __init__(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if targets.shape != logits.shape[:1]:
            raise ValueError(f"targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}")
        if targets.numel() and int(targets.max()) >= logits.shape[1]:
            raise ValueError(f"target {int(targets.max())} is out of range for {logits.shape[1]} classes "
                             "(MODEL.HEADS.NUM_CLASSES too small for the training labels?)")
        self.valid = targets >= 0
        self.index = targets.clamp(min=0).long()[:, None]
        self.one_hot = torch.zeros_like(logits, dtype=torch.bool).scatter(1, self.index, True)
        self.one_hot &= self.valid[:, None]


class Linear(nn.Module):
    """Plain linear classifier without bias: ``scale * x W^T``; ``margin`` is unused."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 1.0, margin: float = 0.0) -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(f"classifier needs positive sizes, got in_features={in_features}, "
                             f"num_classes={num_classes}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.scale = float(scale)
        self.margin = float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)

    def class_weight(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The class-weight matrix, or only the classes ``rows`` (sampled classes, e.g. Partial FC;
        indexing keeps the gradient flowing into the full matrix)."""
        return self.weight if rows is None else self.weight[rows]

    def base_logits(self, features: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Margin-free, unscaled logits ``(N, num_classes)`` (or ``(N, len(rows))``)."""
        return F.linear(features, self.class_weight(rows))

    def apply_margin(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Training logits from :meth:`base_logits` output (returns a new tensor)."""
        return logits * self.scale

    def margin_free_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.base_logits(features) * self.scale

    def forward(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits with margin when ``targets`` are given, margin-free otherwise (both scaled)."""
        logits = self.base_logits(features)
        return logits * self.scale if targets is None else self.apply_margin(logits, targets)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, "
                f"scale={self.scale}, margin={self.margin}")


class _CosineClassifier(Linear):
    """Logits are cosines between the L2-normalised feature and class weights."""

    def base_logits(self, features: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        # float32 even under autocast: margins act on cosines, where fp16/bf16 rounding is large
        dtype = torch.promote_types(features.dtype, torch.float32)
        with torch.autocast(device_type=features.device.type, enabled=False):
            weight = F.normalize(self.class_weight(rows).to(dtype), dim=1)
            return F.linear(F.normalize(features.to(dtype), dim=1), weight)


class CosSoftmax(_CosineClassifier):
    """CosFace / AM-softmax (Wang et al. 2018): ``s * (cos θ_y - m)`` at the target, ``s * cos θ`` elsewhere."""

    def apply_margin(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        mask = _TargetMask(logits, targets)
        return (logits - self.margin * mask.one_hot.to(logits.dtype)) * self.scale


class CombinedMarginSoftmax(_CosineClassifier):
    """insightface's combined margin: ``s * (cos(m1 θ_y + m2) - m3)`` at the target, ``s * cos θ`` elsewhere.

    ``margin`` is the additive angular margin ``m2`` (ArcFace), ``m1`` the multiplicative angular
    margin (SphereFace) and ``m3`` the additive cosine margin (CosFace); (1, 0.5, 0) is ArcFace,
    (1, 0, 0.35) CosFace, (1, 0.3, 0.2) the combination of Deng et al. (2019, Table 1).

    Past the point where ``m1 θ + m2`` reaches π the target logit would rise again, so it continues
    monotonically instead: with ``m1 = 1`` as insightface/FastReID's ArcFace (``cos θ - m3 - m2 sin m2``
    once ``cos θ <= cos(π - m2)``), otherwise as ``cos θ - 1 - cos θ* - m3`` (continuous at
    ``θ* = (π - m2) / m1``). With ``easy_margin`` the angular margin applies only where ``cos θ > 0``.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 1.0, margin: float = 0.0,
                 m1: float = 1.0, m3: float = 0.0, easy_margin: bool = False) -> None:
        super().__init__(in_features, num_classes, scale, margin)
        if m1 < 1.0 or margin < 0.0 or m3 < 0.0:
            raise ValueError(f"combined margins need m1 >= 1, m2 >= 0, m3 >= 0; got ({m1}, {margin}, {m3})")
        self.m1, self.m3 = float(m1), float(m3)
        self.easy_margin = easy_margin
        self.cos_m = math.cos(self.margin)
        self.sin_m = math.sin(self.margin)
        self.threshold = math.cos(math.pi - self.margin)
        self.fallback_offset = math.sin(math.pi - self.margin) * self.margin
        self.theta_limit = (math.pi - self.margin) / self.m1

    def _target_logit(self, cos_t: torch.Tensor) -> torch.Tensor:
        if self.m1 == 1.0:
            sin_t = (1.0 - cos_t.square()).clamp(min=1e-12).sqrt()
            margined = cos_t * self.cos_m - sin_t * self.sin_m
            fallback = cos_t - self.fallback_offset
            beyond = cos_t <= self.threshold
        else:
            theta = torch.acos(cos_t.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
            margined = torch.cos(self.m1 * theta + self.margin)
            fallback = cos_t - 1.0 - math.cos(self.theta_limit)
            beyond = theta > self.theta_limit
        if self.easy_margin:
            adjusted = torch.where(cos_t > 0, margined, cos_t)
        else:
            adjusted = torch.where(beyond, fallback, margined)
        return adjusted - self.m3

    def apply_margin(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        mask = _TargetMask(logits, targets)
        cos_t = logits.gather(1, mask.index)
        adjusted = torch.where(mask.valid[:, None], self._target_logit(cos_t), cos_t)
        return logits.scatter(1, mask.index, adjusted) * self.scale

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m1={self.m1}, m3={self.m3}, easy_margin={self.easy_margin}"


class ArcSoftmax(CombinedMarginSoftmax):
    """ArcFace (Deng et al. 2019): ``s * cos(θ_y + m)`` at the target, ``s * cos θ`` elsewhere.

    Where ``θ_y + m`` would pass π (``cos θ_y <= cos(π - m)``), cos(θ+m) stops being monotonic, so
    the target logit falls back to ``cos θ_y - m sin(m)`` (FastReID/insightface); with
    ``easy_margin`` the margin is applied only where ``cos θ_y > 0``.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 1.0, margin: float = 0.0,
                 easy_margin: bool = False) -> None:
        super().__init__(in_features, num_classes, scale, margin, m1=1.0, m3=0.0, easy_margin=easy_margin)


class CircleSoftmax(_CosineClassifier):
    """Circle loss logits (Sun et al., CVPR 2020) with adaptive, self-paced weights.

    Target: ``s * α_p (cos - (1 - m))`` with ``α_p = [1 + m - cos]_+``;
    others: ``s * α_n (cos - m)`` with ``α_n = [cos + m]_+`` (weights are not differentiated).
    """

    def apply_margin(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        mask = _TargetMask(logits, targets)
        detached = logits.detach()
        alpha_p = (1.0 + self.margin - detached).clamp(min=0.0)
        alpha_n = (detached + self.margin).clamp(min=0.0)
        positive = alpha_p * (logits - (1.0 - self.margin))
        negative = alpha_n * (logits - self.margin)
        return torch.where(mask.one_hot, positive, negative) * self.scale


CLASSIFIER_REGISTRY.register("Linear", aliases=("linear",))(Linear)
CLASSIFIER_REGISTRY.register("CosSoftmax", aliases=("cosSoftmax", "CosFace"))(CosSoftmax)
CLASSIFIER_REGISTRY.register("ArcSoftmax", aliases=("arcSoftmax", "ArcFace"))(ArcSoftmax)
CLASSIFIER_REGISTRY.register("CombinedMarginSoftmax", aliases=("CombinedMargin",))(CombinedMarginSoftmax)
CLASSIFIER_REGISTRY.register("CircleSoftmax", aliases=("circleSoftmax",))(CircleSoftmax)


def build_classifier(name: str, in_features: int, num_classes: int, scale: float, margin: float,
                     **options: float) -> Linear:
    """The classifier registered as ``name`` (``MODEL.HEADS.CLS_LAYER``).

    ``options`` (e.g. the combined margin's ``m1``/``m3``) go to classifiers whose constructor takes
    them; a classifier without such an argument accepts it only at its neutral value
    (:data:`NEUTRAL_OPTIONS`), so a configured margin is never silently dropped.
    """
    try:
        cls = CLASSIFIER_REGISTRY.get(name)
    except KeyError as exc:
        raise UnknownNameError(f"MODEL.HEADS.CLS_LAYER: {exc.args[0]}") from None
    accepted = inspect.signature(cls).parameters
    unused = {k: v for k, v in options.items() if k not in accepted and v != NEUTRAL_OPTIONS.get(k)}
    if unused:
        raise ConfigError(f"MODEL.HEADS.CLS_LAYER {name!r} does not take {unused}; use CombinedMarginSoftmax for "
                          "multiplicative (m1) and additive cosine (m3) margins")
    return cls(in_features, num_classes, scale=scale, margin=margin,
               **{k: v for k, v in options.items() if k in accepted})


# Values of optional classifier arguments that mean "not used" (a classifier without them is fine).
NEUTRAL_OPTIONS: dict[str, float] = {"m1": 1.0, "m3": 0.0}
