"""Top-k retrieval metrics for galleries too large for exhaustive ranking (e.g. 1,000,000 images).

Each query retrieves its ``k + J`` nearest gallery items (``J`` = the most junk items any query has,
so that ``k`` valid items remain after junk removal), then keeps the first ``k`` valid ones. Metrics,
over queries with at least one true match in the gallery:

- ``Rank-r`` for ``r <= k``: exact CMC when the search is exact;
- ``mAP@k``: ``AP@k = (1 / min(m, k)) * sum_{j <= k, j-th is a match} precision@j`` with ``m`` the
  query's number of true matches in the whole gallery (so ``mAP@k = mAP`` when ``k >= gallery``);
- ``MatchRecall@k``: mean fraction of the query's true matches retrieved in the first ``k`` (not the
  fine-grained retrieval ``Recall@K`` of :mod:`omnireid.evaluation.retrieval`, which is 1 when *any*
  match is in the first ``K``).

Search backends (``SEARCH_REGISTRY``): ``torch`` (exact, ties broken by gallery index, no dependency;
see :mod:`omnireid.evaluation.knn`),
``faiss_flat`` (exact), ``faiss_ivf`` (``nlist``, ``nprobe``) and ``faiss_hnsw`` (``m``,
``ef_search``). faiss is an optional extra (``pip install omnireid[faiss]``), imported lazily.
faiss backends may break equal distances at the k-th place differently.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from omnireid.utils.errors import MissingDependencyError
from omnireid.utils.registry import Registry

from .distance import DistanceMetric, prepare_pair
from .knn import search_prepared
from .rank import MatchTable, as_id_array, rows_per_chunk

# fn(query, gallery, k, metric, memory_budget_mb, **options) -> (distances (nq, k), indices (nq, k))
SEARCH_REGISTRY = Registry("search backend")


def _import_faiss():
    try:
        import faiss  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "this search backend needs faiss: install it with `pip install faiss-cpu` "
            "(or `pip install omnireid[faiss]`), or use backend='torch'"
        ) from exc
    return faiss


@SEARCH_REGISTRY.register("torch")
def torch_search(query: torch.Tensor, gallery: torch.Tensor, k: int, metric: DistanceMetric,
                 memory_budget_mb: float = 1024, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if options:
        raise ValueError(f"the torch search backend takes no options, got {sorted(options)}")
    found = search_prepared(query, gallery, k, metric, memory_budget_mb, exclude_self=False)
    return found.distances, found.indices


def _faiss_search(index, query: torch.Tensor, gallery: torch.Tensor, k: int, metric: DistanceMetric,
                  memory_budget_mb: float):
    q = np.ascontiguousarray(query.float().numpy())
    rows = rows_per_chunk(k, 16, memory_budget_mb)
    dists, idx = [], []
    for s in range(0, len(q), rows):
        d, i = index.search(q[s : s + rows], k)
        dists.append(d)
        idx.append(i)
    d, i = np.concatenate(dists), np.concatenate(idx)
    if metric.name == "cosine":
        d = 1 - d  # inner product of normalised features -> cosine distance
    return torch.from_numpy(d), torch.from_numpy(i.astype(np.int64))


def _faiss_metric(faiss, metric: DistanceMetric):
    table = {"cosine": faiss.METRIC_INNER_PRODUCT, "euclidean": faiss.METRIC_L2}
    if metric.name not in table:
        raise ValueError(f"faiss backends support metrics {sorted(table)}, got {metric.name!r}")
    return table[metric.name]


@SEARCH_REGISTRY.register("faiss_flat")
def faiss_flat_search(query, gallery, k, metric, memory_budget_mb=1024, **options):
    if options:
        raise ValueError(f"faiss_flat takes no options, got {sorted(options)}")
    faiss = _import_faiss()
    index = faiss.IndexFlat(gallery.shape[1], _faiss_metric(faiss, metric))
    index.add(np.ascontiguousarray(gallery.float().numpy()))
    return _faiss_search(index, query, gallery, k, metric, memory_budget_mb)


@SEARCH_REGISTRY.register("faiss_ivf")
def faiss_ivf_search(query, gallery, k, metric, memory_budget_mb=1024, nlist: int | None = None, nprobe: int = 16,
                     train_size: int = 200_000, seed: int = 0):
    faiss = _import_faiss()
    g = np.ascontiguousarray(gallery.float().numpy())
    nlist = nlist or max(1, int(4 * np.sqrt(len(g))))
    fmetric = _faiss_metric(faiss, metric)
    quantizer = faiss.IndexFlat(g.shape[1], fmetric)
    index = faiss.IndexIVFFlat(quantizer, g.shape[1], nlist, fmetric)
    rng = np.random.default_rng(seed)
    sample = g if len(g) <= train_size else g[np.sort(rng.choice(len(g), train_size, replace=False))]
    index.train(sample)
    index.add(g)
    index.nprobe = nprobe
    return _faiss_search(index, query, gallery, k, metric, memory_budget_mb)


@SEARCH_REGISTRY.register("faiss_hnsw")
def faiss_hnsw_search(query, gallery, k, metric, memory_budget_mb=1024, m: int = 32, ef_search: int = 128,
                      ef_construction: int = 80):
    faiss = _import_faiss()
    g = np.ascontiguousarray(gallery.float().numpy())
    index = faiss.IndexHNSWFlat(g.shape[1], m, _faiss_metric(faiss, metric))
    index.hnsw.efConstruction = ef_construction
    index.add(g)
    index.hnsw.efSearch = max(ef_search, k)
    return _faiss_search(index, query, gallery, k, metric, memory_budget_mb)


@dataclass
class RankedLists:
    """The first ``k`` valid (non-junk) gallery items of every query, nearest first.

    ``indices`` (nq, k) gallery indices, -1 where fewer than ``k`` valid items were found;
    ``distances`` (nq, k) their distances (``inf`` at -1); ``matches`` (nq, k) true matches (same
    identity, other camera); ``num_pos`` (nq,) true matches of the query in the whole gallery.
    """

    indices: np.ndarray
    distances: np.ndarray
    matches: np.ndarray
    num_pos: np.ndarray


def rank_lists(
    q_feats: np.ndarray | torch.Tensor,
    g_feats: np.ndarray | torch.Tensor,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    k: int = 10,
    metric: str = "cosine",
    backend: str = "torch",
    memory_budget_mb: float = 1024,
    **options: Any,
) -> RankedLists:
    """Each query's ``k`` nearest valid gallery items (junk = same pid and camera, removed as in
    the Market-1501 protocol); see the module docstring for how junk is over-fetched."""
    q_pids, g_pids = as_id_array(q_pids, "q_pids"), as_id_array(g_pids, "g_pids")
    q_camids, g_camids = as_id_array(q_camids, "q_camids"), as_id_array(g_camids, "g_camids")
    q, g, m = prepare_pair(q_feats, g_feats, metric)
    if len(q) != len(q_pids) or len(g) != len(g_pids):
        raise ValueError(f"{len(q)} query / {len(g)} gallery features but {len(q_pids)} / {len(g_pids)} ids")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    table = MatchTable(q_pids, g_pids, q_camids, g_camids)
    junk = table.num_same_pid - table.num_pos
    fetch = int(min(len(g), k + int(junk.max(initial=0))))
    dist, idx = SEARCH_REGISTRY.get(backend)(q, g, fetch, m, memory_budget_mb, **options)
    dist, idx = dist.double().numpy(), idx.numpy()
    found = idx >= 0  # faiss pads with -1 when it finds fewer items
    safe = np.where(found, idx, 0)
    same_pid = (g_pids[safe] == q_pids[:, None]) & found
    keep = found & ~(same_pid & (g_camids[safe] == q_camids[:, None]))
    position = np.cumsum(keep, axis=1) - 1  # 0-based position among valid retrieved items
    keep &= position < k
    rows, cols = np.nonzero(keep)
    slots = position[rows, cols]
    indices = np.full((len(q), k), -1, dtype=np.int64)
    distances = np.full((len(q), k), np.inf)
    matches = np.zeros((len(q), k), dtype=bool)
    indices[rows, slots] = idx[rows, cols]
    distances[rows, slots] = dist[rows, cols]
    matches[rows, slots] = same_pid[rows, cols]
    return RankedLists(indices=indices, distances=distances, matches=matches, num_pos=table.num_pos)


def evaluate_topk(
    q_feats: np.ndarray | torch.Tensor,
    g_feats: np.ndarray | torch.Tensor,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    k: int = 100,
    metric: str = "cosine",
    backend: str = "faiss_flat",
    memory_budget_mb: float = 1024,
    **options: Any,
) -> dict[str, float]:
    """``Rank-r`` (r in 1, 5, 10, k; r <= k), ``mAP@k`` and ``MatchRecall@k`` in percent; see module doc."""
    lists = rank_lists(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, k=k, metric=metric, backend=backend,
                       memory_budget_mb=memory_budget_mb, **options)
    valid_q = lists.num_pos > 0
    if not valid_q.any():
        raise ValueError("no query has a true match in the gallery (all query identities are absent or junk)")
    hits = lists.matches
    first_pos = np.where(hits.any(1), np.argmax(hits, axis=1), k)
    precision = np.where(hits, np.cumsum(hits, axis=1) / np.arange(1.0, k + 1), 0.0)
    num_pos = lists.num_pos
    ap = precision.sum(1) / np.maximum(np.minimum(num_pos, k), 1)
    recall = hits.sum(1) / np.maximum(num_pos, 1)
    out: dict[str, float] = {}
    for r in sorted({1, 5, 10, k}):
        if r <= k:
            out[f"Rank-{r}"] = float(np.mean(first_pos[valid_q] < r)) * 100
    out[f"mAP@{k}"] = float(np.mean(ap[valid_q])) * 100
    out[f"MatchRecall@{k}"] = float(np.mean(recall[valid_q])) * 100
    return out
