"""Query-gallery distances, computed block by block with one formula.

Every path (full matrix, query chunks, re-ranking) calls :func:`compute_distance`, so a distance
is the same float whether it was computed in a large or a small block.

- ``cosine``: ``1 - <x/|x|, y/|y|>`` (FastReID's ``compute_cosine_distance``), in ``[0, 2]``.
- ``euclidean``: the *squared* L2 distance ``|x|^2 + |y|^2 - 2<x, y>`` without clamping or
  square root (FastReID's ``compute_euclidean_distance``).

Half-precision inputs are converted to float32 first; float64 inputs stay float64.

Threads: the GEMMs use the caller's torch thread setting; the memory-bound steps around them
(ranking, sparse re-ranking) default to one thread (``num_threads`` arguments), because torch's
multi-threaded element-wise ops slow down several-fold when the cores are shared (measured on the
2-core benchmark machine), while one thread loses little on memory-bound work. The k-NN selection
instead splits its work into independent single-threaded tasks (:mod:`omnireid.evaluation.knn`).
"""
from __future__ import annotations

import abc

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from omnireid.utils.registry import Registry

# fn(x, y) -> (len(x), len(y)) distances; x, y already prepared by the matching "prepare" step.
DISTANCE_REGISTRY = Registry("distance metric")
# Rows normalised at a time: bounds the temporaries of the norm to a few MB.
_NORM_ROWS = 4096


class DistanceMetric(abc.ABC):
    """A retrieval distance: ``prepare`` once per feature set, then ``pairwise`` per block."""

    name: str = ""
    # True when, on prepared features, the distance of two concatenations is the sum of the distances
    # of their parts scaled by the squared scale of the parts (cosine on unit vectors: 1 - <x, y> =
    # |x - y|^2 / 2; squared euclidean): distance fusion is then exactly a scaled concatenation
    # (omnireid.evaluation.fusion).
    segment_additive: bool = False

    def prepare(self, features: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Per-feature-set preparation, row by row (a slice prepared alone gives the same rows as
        the whole set: the gallery can be prepared in chunks); written into ``out`` when it makes a copy."""
        return features

    @abc.abstractmethod
    def pairwise(self, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Distances between every row of ``x`` and every row of ``y`` (written into ``out`` when
        given: a reused buffer saves allocating and zeroing fresh pages for every block)."""

    @abc.abstractmethod
    def rowwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance between ``x[i]`` and ``y[i]`` for every ``i`` (used for a few sparse pairs)."""

    def dot_operand(self, features: torch.Tensor, side: str) -> torch.Tensor | None:
        """Rows ``a`` (``side="left"``, for ``x``) or ``b`` (``"right"``, for ``y``) with
        ``pairwise(x, y) = a @ b.T`` in exact arithmetic, or None when the distance has no such form.
        The k-NN search screens its tiles with a bfloat16 GEMM of these and rescores the candidates
        from them in float64 (:mod:`omnireid.evaluation.knn`)."""
        return None


@DISTANCE_REGISTRY.register("cosine")
class CosineDistance(DistanceMetric):
    name = "cosine"
    segment_additive = True

    def prepare(self, features: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows scaled to unit length (``F.normalize``'s values), without a full-size temporary; rows
        already of unit length (an ensemble's fused features, normalised embeddings) are returned as
        they are, so evaluating them needs no copy whatever their width."""
        norms = torch.cat([torch.linalg.vector_norm(features[a : a + _NORM_ROWS], dim=1)
                           for a in range(0, features.shape[0], _NORM_ROWS)] or [features.new_zeros(0)])
        if features.is_floating_point() and bool(((norms - 1).abs() <= 8 * torch.finfo(features.dtype).eps).all()):
            return features
        denominators = norms.clamp_min(1e-12)[:, None]  # F.normalize's eps
        out = torch.empty_like(features) if out is None else out
        for a in range(0, features.shape[0], _NORM_ROWS):
            torch.div(features[a : a + _NORM_ROWS], denominators[a : a + _NORM_ROWS], out=out[a : a + _NORM_ROWS])
        return out

    def pairwise(self, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is None:
            out = torch.empty((x.shape[0], y.shape[0]), dtype=x.dtype, device=x.device)
        return out.fill_(1).addmm_(x, y.t(), beta=1, alpha=-1)  # one block, one rounding of 1 - <x, y>

    def rowwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1 - (x * y).sum(dim=1)

    def dot_operand(self, features: torch.Tensor, side: str) -> torch.Tensor:
        """``[x, 1] . [-y, 1] = 1 - <x, y>``."""
        return torch.cat([features if side == "left" else -features, features.new_ones(features.shape[0], 1)], dim=1)


@DISTANCE_REGISTRY.register("euclidean")
class SquaredEuclideanDistance(DistanceMetric):
    name = "euclidean"
    segment_additive = True

    def pairwise(self, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        xx = x.pow(2).sum(dim=1, keepdim=True)
        yy = y.pow(2).sum(dim=1, keepdim=True).t()
        return torch.add(xx, yy, out=out).addmm_(x, y.t(), beta=1, alpha=-2)  # FastReID's order of operations

    def rowwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.pow(2).sum(dim=1) + y.pow(2).sum(dim=1) - 2 * (x * y).sum(dim=1)

    def dot_operand(self, features: torch.Tensor, side: str) -> torch.Tensor:
        """``[x, |x|^2, 1] . [-2y, 1, |y|^2] = |x|^2 + |y|^2 - 2<x, y>``."""
        ones = features.new_ones(features.shape[0], 1)
        squares = features.pow(2).sum(dim=1, keepdim=True)
        parts = [features, squares, ones] if side == "left" else [-2 * features, ones, squares]
        return torch.cat(parts, dim=1)


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the enclosed torch ops on ``num_threads`` intra-op threads (None: leave the setting)."""
    old = torch.get_num_threads()
    if num_threads is None or num_threads == old:
        yield
        return
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def get_metric(name: str) -> DistanceMetric:
    """The registered metric ``name`` (``TEST.METRIC``); unknown names list the known ones."""
    return DISTANCE_REGISTRY.get(name)()


def as_float_tensor(array: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """A CPU float32/float64 tensor view (float16/bfloat16 are upcast to float32); checks finiteness."""
    tensor = torch.as_tensor(array)
    if tensor.is_floating_point():
        if tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()
    else:
        raise TypeError(f"{what} must be a floating-point array, got dtype {tensor.dtype}")
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    # a finite sum proves every value finite (one fast reduction); otherwise check element-wise
    if tensor.numel() and not bool(torch.isfinite(tensor.sum())) and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{what} contains NaN or infinite values")
    return tensor


def prepare_features(features: np.ndarray | torch.Tensor, metric: DistanceMetric, what: str,
                     prepare: bool = True) -> torch.Tensor:
    feats = as_float_tensor(features, what)
    if feats.dim() != 2:
        raise ValueError(f"{what} must be 2-D (N, D), got shape {tuple(feats.shape)}")
    return (metric.prepare(feats) if prepare else feats).contiguous()


def prepare_pair(
    q_feats: np.ndarray | torch.Tensor, g_feats: np.ndarray | torch.Tensor, metric: str | DistanceMetric,
    prepare_gallery: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, DistanceMetric]:
    """Validated, metric-prepared (e.g. L2-normalised) query and gallery features of one dtype;
    ``prepare_gallery=False`` leaves the gallery unprepared, for callers preparing it chunk by chunk."""
    m = get_metric(metric) if isinstance(metric, str) else metric
    q = prepare_features(q_feats, m, "query features")
    g = prepare_features(g_feats, m, "gallery features", prepare=prepare_gallery)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features are {q.shape[1]}-d but gallery features are {g.shape[1]}-d")
    if q.dtype != g.dtype:
        q, g = q.double(), g.double()
    return q, g, m


def compute_distance(
    x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, metric: str = "cosine"
) -> torch.Tensor:
    """The dense distance matrix between two feature sets (only for sizes that fit in memory)."""
    q, g, m = prepare_pair(x, y, metric)
    return m.pairwise(q, g)

