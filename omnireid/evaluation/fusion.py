"""Fusing the features of several models into one feature set the usual evaluators rank.

Two ways (``FUSION_REGISTRY``, ``omnireid ensemble --fusion``), both returning *features*, so the
protocol evaluators, flip TTA, AQE, re-ranking and the memory-bounded block paths apply unchanged
(no model's query x gallery matrix is ever formed):

- ``concat``: ``[w_1 f_1/|f_1|, ..., w_M f_M/|f_M|]`` (each model's feature L2-normalised, weighted),
  prepared by the metric (cosine: scaled to unit length, which changes no cosine distance).
- ``distance``: the weighted mean of the models' distances, ``d = sum_i (w_i / W) d_i(x_i, y_i)``
  with ``W = sum_i w_i``. For a metric that is additive over segments of prepared features
  (``DistanceMetric.segment_additive``: cosine = half the squared distance of unit vectors, squared
  euclidean), this mean is *exactly* the metric of the concatenation
  ``[sqrt(w_1/W) p(f_1), ..., sqrt(w_M/W) p(f_M)]`` (``p`` = the metric's ``prepare``; for cosine the
  concatenation already has unit norm, so preparing it again changes nothing).

Both return features the metric has prepared: the evaluator then ranks them without a prepared
copy, so a fused evaluation needs no more memory than one model's (its distance blocks are bounded
by ``TEST.MEMORY_BUDGET_MB`` whatever the feature width; ``benchmarks/ensemble_memory.py``).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from omnireid.utils.errors import ConfigError
from omnireid.utils.registry import Registry

from .distance import DistanceMetric, get_metric

# fn(features: list of (N, D_i) tensors, weights, metric) -> (N, sum D_i) fused features
FUSION_REGISTRY = Registry("feature fusion")

FusionFn = Callable[[Sequence[torch.Tensor], Sequence[float], DistanceMetric], torch.Tensor]


def check_weights(weights: Sequence[float], count: int) -> list[float]:
    """One finite weight > 0 per model."""
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ConfigError(f"--weights: {len(weights)} weights for {count} models (give one per model)")
    bad = [w for w in weights if not (math.isfinite(w) and w > 0)]
    if bad:
        raise ConfigError(f"--weights must be finite numbers > 0, got {bad[0]}")
    return weights


def _float(features: torch.Tensor) -> torch.Tensor:
    return features.float() if features.dtype not in (torch.float32, torch.float64) else features


@FUSION_REGISTRY.register("concat")
def concat_fusion(features: Sequence[torch.Tensor], weights: Sequence[float], metric: DistanceMetric) -> torch.Tensor:
    """Each model's feature L2-normalised and multiplied by its weight, concatenated (then prepared
    by ``metric``: for cosine, a uniform scale to unit length)."""
    return metric.prepare(torch.cat([w * F.normalize(_float(f), p=2, dim=1) for f, w in zip(features, weights)], dim=1))


@FUSION_REGISTRY.register("distance")
def distance_fusion(features: Sequence[torch.Tensor], weights: Sequence[float], metric: DistanceMetric) -> torch.Tensor:
    """Features whose ``metric`` distance is the weighted mean of the models' ``metric`` distances."""
    if not metric.segment_additive:
        raise ConfigError(f"--fusion distance needs a metric whose distance adds up over feature segments "
                          f"(cosine, euclidean); TEST.METRIC {metric.name!r} is not one: use --fusion concat")
    total = float(sum(weights))
    return torch.cat([math.sqrt(w / total) * metric.prepare(_float(f)) for f, w in zip(features, weights)], dim=1)


def fuse_features(features: Sequence[torch.Tensor], weights: Sequence[float], fusion: str = "concat",
                  metric: str | DistanceMetric = "cosine") -> torch.Tensor:
    """The fused ``(N, sum D_i)`` features of the models' ``(N, D_i)`` features (same N, same order)."""
    if not features:
        raise ValueError("no features to fuse")
    sizes = {f.shape[0] for f in features}
    if len(sizes) != 1 or any(f.dim() != 2 for f in features):
        raise ValueError(f"features to fuse must be (N, D_i) with one N, got {[tuple(f.shape) for f in features]}")
    weights = check_weights(weights, len(features))
    m = get_metric(metric) if isinstance(metric, str) else metric
    try:
        fn: FusionFn = FUSION_REGISTRY.get(fusion)
    except KeyError as exc:
        raise ConfigError(f"--fusion: {exc.args[0]}") from None
    return fn(features, weights, m)
