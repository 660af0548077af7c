"""Features in, metrics out, without ever holding the query x gallery distance matrix.

Queries are processed in chunks sized by ``memory_budget_mb``: a chunk's distance block is
computed (one GEMM), reduced to the positions of its true matches (and ROC statistics), and freed.
Results do not depend on the chunk size or the thread count (see :mod:`omnireid.evaluation.rank`).
"""
from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np
import torch

from .distance import DistanceMetric, prepare_pair, torch_threads
from .rank import WORK_BYTES_PER_ELEMENT, RankAccumulator, RankMetrics, rows_per_chunk

# extra working bytes per block element when the ROC statistics are collected (mask + kept values)
_ROC_BYTES_PER_ELEMENT = 5
# A gallery whose prepared (e.g. L2-normalised) copy takes more than this fraction of memory_budget_mb
# is prepared per GEMM in chunks of GALLERY_CHUNK_BYTES (4,096 x 2048-d) instead of copied whole.
PREPARED_GALLERY_BUDGET_FRACTION = 0.25
GALLERY_CHUNK_BYTES = 32 * 2**20


class DistanceBlocks(Protocol):
    """Something that yields query-row blocks of a (conceptual) query x gallery distance matrix."""

    num_query: int
    num_gallery: int

    def blocks(self, rows: int) -> Iterator[tuple[int, torch.Tensor]]: ...

    def bytes_per_element(self) -> int: ...


class FeatureDistanceBlocks:
    """Distance blocks computed from features with a registered metric.

    ``query`` is prepared (:meth:`DistanceMetric.prepare`). A ``gallery`` not ``gallery_prepared``
    is prepared ``GALLERY_CHUNK_BYTES`` of rows at a time into one reused buffer for every block:
    a large gallery is never copied whole (at MSMT17 size the prepared copy alone was 673 MB, more
    than the blocks), for about 15% more time there (each block prepares the gallery again).
    """

    def __init__(self, query: torch.Tensor, gallery: torch.Tensor, metric: DistanceMetric,
                 gemm_threads: int | None = None, gallery_prepared: bool = True) -> None:
        self.query, self.gallery, self.metric = query, gallery, metric
        self.num_query, self.num_gallery = query.shape[0], gallery.shape[0]
        self.gemm_threads = gemm_threads or torch.get_num_threads()
        self.gallery_prepared = gallery_prepared

    def blocks(self, rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        if self.gallery_prepared:
            for start in range(0, self.num_query, rows):
                with torch_threads(self.gemm_threads):
                    block = self.metric.pairwise(self.query[start : start + rows], self.gallery)
                yield start, block
            return
        chunk = max(1, min(self.num_gallery, GALLERY_CHUNK_BYTES // max(1, self.gallery[:1].nbytes)))
        buffer = torch.empty((chunk, self.gallery.shape[1]), dtype=self.gallery.dtype)
        for start in range(0, self.num_query, rows):
            query = self.query[start : start + rows]
            block = torch.empty((query.shape[0], self.num_gallery), dtype=query.dtype)
            with torch_threads(self.gemm_threads):
                for col in range(0, self.num_gallery, chunk):
                    raw = self.gallery[col : col + chunk]
                    gallery = self.metric.prepare(raw, out=buffer[: raw.shape[0]])
                    self.metric.pairwise(query, gallery, out=block[:, col : col + raw.shape[0]])
            yield start, block
            del block

    def bytes_per_element(self) -> int:
        return 2 * self.query.element_size()  # the block, plus the |x|^2 + |y|^2 buffer for euclidean


def evaluate_blocks(
    source: DistanceBlocks,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    memory_budget_mb: float = 1024,
    roc: bool = False,
    num_threads: int | None = 1,
) -> RankMetrics:
    """Exact metrics from any block source, ``memory_budget_mb`` bounding the live block;
    ``num_threads`` torch threads for the ranking kernel (None: the current setting)."""
    acc = RankAccumulator(q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, roc=roc, num_threads=num_threads)
    if (acc.num_query, acc.num_gallery) != (source.num_query, source.num_gallery):
        raise ValueError(
            f"{source.num_query} query / {source.num_gallery} gallery distances but "
            f"{acc.num_query} query / {acc.num_gallery} gallery ids"
        )
    per_element = source.bytes_per_element() + WORK_BYTES_PER_ELEMENT + (_ROC_BYTES_PER_ELEMENT if roc else 0)
    rows = rows_per_chunk(source.num_gallery, per_element, memory_budget_mb)
    for start, block in source.blocks(rows):
        acc.add_block(start, block)
        del block
    return acc.result()


def evaluate_features(
    q_feats: np.ndarray | torch.Tensor,
    g_feats: np.ndarray | torch.Tensor,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    metric: str = "cosine",
    max_rank: int = 50,
    memory_budget_mb: float = 1024,
    roc: bool = False,
    rerank=None,
    num_threads: int | None = 1,
) -> RankMetrics:
    """CMC / per-query AP and INP (and ROC) straight from features.

    ``metric``: ``"cosine"`` (1 - cosine similarity) or ``"euclidean"`` (squared L2, as FastReID).
    float16/bfloat16 features are computed in float32. ``rerank``: a
    :class:`omnireid.evaluation.rerank.RerankParams` to evaluate k-reciprocal re-ranked distances,
    also block by block. The result equals ``evaluate_rank`` on the full distance matrix.
    ``num_threads``: torch threads for everything but the GEMMs (which use the current setting).
    """
    source = distance_blocks(q_feats, g_feats, metric, memory_budget_mb, rerank, num_threads)
    return evaluate_blocks(source, q_pids, g_pids, q_camids, g_camids, max_rank, memory_budget_mb, roc, num_threads)


def distance_blocks(
    q_feats: np.ndarray | torch.Tensor,
    g_feats: np.ndarray | torch.Tensor,
    metric: str | DistanceMetric = "cosine",
    memory_budget_mb: float = 1024,
    rerank=None,
    num_threads: int | None = 1,
) -> DistanceBlocks:
    """The query x gallery distances of ``metric`` (k-reciprocal re-ranked with ``rerank``), as a
    block source: what the evaluator ranks and what ``omnireid submit`` writes, from one place."""
    if rerank is not None:
        from .rerank import RerankedDistanceBlocks, feature_graph

        q, g, m = prepare_pair(q_feats, g_feats, metric)
        graph = feature_graph(q, g, m, memory_budget_mb)
        del q, g  # the graph holds its own concatenated copy
        return RerankedDistanceBlocks(graph, rerank, memory_budget_mb, num_threads)
    # A prepared copy of the gallery up to a quarter of the budget is made once (fastest); a larger
    # one is prepared chunk by chunk for every block instead (bounded memory).
    q, g, m = prepare_pair(q_feats, g_feats, metric, prepare_gallery=False)
    copy_fits = g.nbytes <= memory_budget_mb * 2**20 * PREPARED_GALLERY_BUDGET_FRACTION
    if copy_fits:
        g = m.prepare(g).contiguous()
    return FeatureDistanceBlocks(q, g, m, gallery_prepared=copy_fits)
