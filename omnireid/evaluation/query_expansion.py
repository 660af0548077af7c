"""Average query expansion (alpha-QE, Radenovic et al.; FastReID's ``TEST.AQE``), memory-bounded.

For ``qe_time`` rounds, on all ``N`` query and gallery features together:
``s = <f_i/|f_i|, f_j/|f_j|>``; with ``T(i)`` the ``qe_k`` most similar items of ``i`` (itself
included), ``f_i <- mean over j in T(i) of f_j * s_ij^alpha`` (the un-normalised features are
averaged, as FastReID's ``aqe``). The ``qe_k`` nearest are found by symmetric blocks, never with the
dense N x N similarity matrix. Returns new (query, gallery) float32 features.
"""
from __future__ import annotations

import numpy as np
import torch

from omnireid.utils.errors import ConfigError

from .distance import as_float_tensor, get_metric, torch_threads
from .rerank import FeatureGraph


def _top_similar(features: torch.Tensor, k: int, memory_budget_mb: float, gemm_threads: int) -> torch.Tensor:
    cosine = get_metric("cosine")
    graph = FeatureGraph(cosine.prepare(features), features[:0], cosine, memory_budget_mb, gemm_threads=gemm_threads)
    idx, _, _ = graph.knn(k)  # smallest cosine distance = largest similarity
    return idx


def average_query_expansion(
    query: np.ndarray | torch.Tensor,
    gallery: np.ndarray | torch.Tensor,
    qe_time: int = 1,
    qe_k: int = 5,
    alpha: float = 3.0,
    memory_budget_mb: float = 1024,
    num_threads: int | None = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha-QE on query and gallery features together; ``qe_k`` includes the item itself.
    GEMMs use the current torch thread setting, the rest ``num_threads``."""
    if qe_time < 0 or qe_k < 1:
        raise ConfigError(f"AQE needs QE_TIME >= 0 and QE_K >= 1, got QE_TIME={qe_time}, QE_K={qe_k}")
    q = as_float_tensor(query, "query features").float()
    g = as_float_tensor(gallery, "gallery features").float()
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"AQE needs (N, D) features of one dimension, got {tuple(q.shape)} and {tuple(g.shape)}")
    feats = torch.cat([q, g])
    k = min(qe_k, feats.shape[0])
    gemm_threads = torch.get_num_threads()
    for _ in range(qe_time):
        with torch_threads(num_threads):
            feats = _expand_once(feats, k, alpha, memory_budget_mb, gemm_threads)
    return feats[: q.shape[0]].clone(), feats[q.shape[0] :].clone()


def _expand_once(feats: torch.Tensor, k: int, alpha: float, memory_budget_mb: float, gemm_threads: int) -> torch.Tensor:
    """One alpha-QE round: every feature becomes the similarity^alpha-weighted mean of its k nearest."""
    n = feats.shape[0]
    normed = torch.nn.functional.normalize(feats, p=2, dim=1)
    idx = _top_similar(feats, k, memory_budget_mb, gemm_threads)
    step = max(1, int(memory_budget_mb * 2**20 // (8 * k * feats.shape[1])))
    new = torch.empty_like(feats)
    for s in range(0, n, step):
        nb = idx[s : s + step]  # (b, k)
        sims = (normed[s : s + step, None, :] * normed[nb]).sum(-1)  # (b, k)
        new[s : s + step] = (feats[nb] * sims.pow(alpha)[..., None]).mean(dim=1)
    return new
