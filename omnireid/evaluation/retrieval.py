"""Fine-grained retrieval metrics with pytorch-metric-learning's definitions, features in.

Protocol: every query is searched in the gallery. When the gallery *is* the query set (CUB, Cars,
SOP), each item is a query against all the others and is masked from its own list by its index
(never by dropping the top hit). Neighbours are ordered by ``(distance, gallery index)``.

For a query with label ``y``, ``R`` = number of gallery items labelled ``y`` (itself excluded).
Queries with ``R = 0`` (their class has no other item) are skipped and counted. Over the others:

- ``Recall@K``: 1 if a same-label item is among the first ``K`` neighbours (Song et al. 2016; equal to
  pytorch-metric-learning's ``precision_at_1`` for ``K = 1``);
- ``R-Precision``: (same-label items among the first ``R``) / ``R``;
- ``MAP@R``: ``(1/R) * sum_{i <= R, i-th is same-label} precision@i`` (Musgrave et al. 2020).

Only the first ``max(K, R_max)`` neighbours are needed, found exactly by the memory-bounded kernel of
:mod:`omnireid.evaluation.knn` (or an approximate faiss index from ``SEARCH_REGISTRY``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .distance import get_metric, prepare_features
from .knn import Neighbours, search_prepared, without_own_index
from .rank import as_id_array
from .topk import SEARCH_REGISTRY

logger = logging.getLogger(__name__)

DEFAULT_RECALL_KS = (1, 2, 4, 8)


@dataclass
class RetrievalMetrics:
    """Per-query results of one retrieval evaluation (fractions, over the non-skipped queries)."""

    recall: dict[int, np.ndarray]  # K -> (num_valid,) 0/1 per query
    r_precision: np.ndarray
    map_at_r: np.ndarray
    num_skipped: int
    extra: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """``Recall@K`` / ``R-Precision`` / ``MAP@R`` in percent, and the number of skipped queries."""
        out = {f"Recall@{k}": float(np.mean(v)) * 100 for k, v in sorted(self.recall.items())}
        out["R-Precision"] = float(np.mean(self.r_precision)) * 100
        out["MAP@R"] = float(np.mean(self.map_at_r)) * 100
        out["SkippedQueries"] = float(self.num_skipped)
        return out


def relevant_counts(q_labels: np.ndarray, g_labels: np.ndarray, self_included: bool) -> np.ndarray:
    """``R`` per query: gallery items with the query's label, the query itself not counted."""
    uniq, counts = np.unique(g_labels, return_counts=True)
    pos = np.clip(np.searchsorted(uniq, q_labels), 0, max(len(uniq) - 1, 0))
    found = uniq[pos] == q_labels if len(uniq) else np.zeros(len(q_labels), dtype=bool)
    r = np.where(found, counts[pos] if len(uniq) else 0, 0).astype(np.int64)
    return r - 1 if self_included else r


def metrics_from_hits(hits: np.ndarray, num_relevant: np.ndarray, recall_ks: Sequence[int]) -> RetrievalMetrics:
    """Metrics from ``hits[q, i]`` = "the i-th neighbour of query q has its label" (columns >= R_max).

    Queries with ``num_relevant == 0`` are skipped.
    """
    valid = num_relevant > 0
    if not valid.any():
        raise ValueError("no query has another item of its class in the gallery: retrieval metrics are undefined")
    hits, r = hits[valid], num_relevant[valid]
    k = hits.shape[1]
    if k < int(r.max()):
        raise ValueError(f"{k} neighbours per query cannot give R-Precision/MAP@R for R up to {int(r.max())}")
    position = np.arange(1, k + 1)
    within_r = hits & (position[None, :] <= r[:, None])
    precision = np.cumsum(within_r, axis=1) / position[None, :]
    map_at_r = np.where(within_r, precision, 0.0).sum(axis=1) / r
    r_precision = within_r.sum(axis=1) / r
    recall = {int(kk): hits[:, : min(int(kk), k)].any(axis=1).astype(np.float64) for kk in recall_ks}
    return RetrievalMetrics(recall=recall, r_precision=r_precision, map_at_r=map_at_r,
                            num_skipped=int((~valid).sum()))


def _external_search(q: torch.Tensor, g: torch.Tensor | None, k: int, metric, backend: str,
                     memory_budget_mb: float, options: dict[str, Any]) -> Neighbours:
    """A registered (e.g. approximate faiss) search; with ``g=None``, the query's own index is removed
    from its list (or the last neighbour, when the search did not return the query itself)."""
    search = SEARCH_REGISTRY.get(backend)
    same = g is None
    gallery = q if same else g
    fetch = min(k + int(same), gallery.shape[0])
    dist, idx = search(q, gallery, fetch, metric, memory_budget_mb, **options)
    if same:
        return without_own_index(dist, idx, torch.arange(len(idx)))
    return Neighbours(dist, idx)


def evaluate_retrieval(
    query_features: np.ndarray | torch.Tensor,
    query_labels,
    gallery_features: np.ndarray | torch.Tensor | None = None,
    gallery_labels=None,
    recall_ks: Sequence[int] = DEFAULT_RECALL_KS,
    metric: str = "cosine",
    memory_budget_mb: float = 1024,
    backend: str = "torch",
    num_threads: int | None = None,
    screen: bool | None = None,
    **options: Any,
) -> RetrievalMetrics:
    """Recall@K, R-Precision and MAP@R; without a gallery, each item is a query against all others.

    ``backend``: ``torch`` (exact, ties by gallery index) or a ``SEARCH_REGISTRY`` name (faiss;
    ``options`` go to it). ``memory_budget_mb`` bounds the live distance tile. ``num_threads``: threads
    of the exact search's selection (None: the torch thread setting, like its GEMMs).
    """
    if not recall_ks or min(recall_ks) < 1:
        raise ValueError(f"recall_ks must be positive integers, got {list(recall_ks)}")
    if (gallery_features is None) != (gallery_labels is None):
        raise ValueError("gallery_features and gallery_labels must be given together")
    m = get_metric(metric)
    q = prepare_features(query_features, m, "query features")
    q_labels = as_id_array(query_labels, "query_labels")
    same = gallery_features is None
    g = None if same else prepare_features(gallery_features, m, "gallery features")
    g_labels = q_labels if same else as_id_array(gallery_labels, "gallery_labels")
    if len(q) != len(q_labels) or (g is not None and len(g) != len(g_labels)):
        raise ValueError(f"{len(q)} query / {len(g) if g is not None else len(q)} gallery features but "
                         f"{len(q_labels)} / {len(g_labels)} labels")
    num_relevant = relevant_counts(q_labels, g_labels, self_included=same)
    available = len(g_labels) - int(same)
    if available < 1:
        raise ValueError("the gallery holds no item besides the query")
    k = min(available, max(max(recall_ks), int(num_relevant.max(initial=0))))
    if backend == "torch":
        if options:
            raise ValueError(f"the torch backend takes no options, got {sorted(options)}")
        nn = search_prepared(q, g, k, m, memory_budget_mb, num_threads=num_threads, screen=screen)
    else:
        nn = _external_search(q, g, k, m, backend, memory_budget_mb, options)
    idx = nn.indices.numpy()
    hits = (idx >= 0) & (g_labels[np.maximum(idx, 0)] == q_labels[:, None])
    res = metrics_from_hits(hits, num_relevant, recall_ks)
    if res.num_skipped:
        logger.info("retrieval: %d of %d queries have no other item of their class and are skipped",
                    res.num_skipped, len(q_labels))
    return res
