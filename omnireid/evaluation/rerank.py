"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) with sparse k-NN structures.

Same result as the authors' published dense algorithm (also FastReID's ``re_ranking``), computed on
all ``N = num_query + num_gallery`` items:

1. ``original = d^2 / max_row(d^2)`` over the full N x N distance matrix (assumed symmetric: q-q
   and g-g matrices are), ``initial_rank`` its per-row ascending order;
2. ``R(i, k)``: the items among the ``k+1`` nearest of ``i`` that have ``i`` among their ``k+1``
   nearest; ``R*(i)`` = ``R(i, k1)`` plus ``R(c, round(k1/2))`` of every ``c`` in ``R(i, k1)`` sharing
   more than 2/3 of its items with ``R(i, k1)``;
3. ``V[i, j] = exp(-original[i, j]) / sum`` over ``j`` in ``R*(i)`` (0 elsewhere);
4. local query expansion: ``V[i] <- mean of V[j]`` over the ``k2`` nearest ``j`` of ``i`` (k2 > 1);
5. ``jaccard[i, j] = 1 - m / (2 - m)`` with ``m = sum_k min(V[i, k], V[j, k])``;
6. ``final = jaccard * (1 - lambda) + original * lambda`` for the query x gallery pairs.

:func:`jaccard_distances` gives step 5 among one set of items (every item both query and gallery:
the clustering distance of pseudo-labelling methods), as a sparse matrix.

Here only the ``max(k1+1, k2)`` nearest neighbours of every item are kept (found block by block;
from features the N x N matrix is visited by symmetric blocks, so each distance is computed once),
``V`` is a sparse CSR matrix, and the Jaccard term is accumulated per query chunk from the
column lists of ``V``: memory is O(N * k) plus one block, never a dense N x N array. Ties in the
neighbour order are broken arbitrarily (as numpy's quicksort does in the reference).
"""
from __future__ import annotations

import abc

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from omnireid.utils.errors import ConfigError

from .distance import DistanceMetric, as_float_tensor, get_metric, prepare_pair, torch_threads
from .rank import order_by_row_then_value, rows_per_chunk


@dataclass(frozen=True)
class RerankParams:
    """``TEST.RERANK.K1 / K2 / LAMBDA``."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def __post_init__(self) -> None:
        if self.k1 < 1 or self.k2 < 1:
            raise ConfigError(f"re-ranking needs k1 >= 1 and k2 >= 1, got k1={self.k1}, k2={self.k2}")
        if not 0.0 <= self.lambda_value <= 1.0:
            raise ConfigError(f"re-ranking lambda must be in [0, 1], got {self.lambda_value}")


def _max_square(block: torch.Tensor, dim: int, nonnegative: bool = False) -> torch.Tensor:
    """max of d^2 along ``dim`` without materialising d^2 (one reduction when d >= 0 is known)."""
    hi = block.amax(dim=dim)
    if nonnegative:
        return hi * hi
    lo = block.amin(dim=dim)
    return torch.maximum(hi * hi, lo * lo)


def _flat_where(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.flatnonzero(mask))


def _merge_rows(best_d, best_i, start, end, rows, dists, cols) -> None:
    """Merge candidates (local row, distance, column) into the sorted k-best lists of rows start..end-1."""
    k = best_d.shape[1]
    cur_d, cur_i = best_d[start:end], best_i[start:end]
    all_r = torch.cat([torch.arange(end - start).repeat_interleave(k), rows])
    all_d = torch.cat([cur_d.reshape(-1), dists.to(cur_d.dtype)])
    all_i = torch.cat([cur_i.reshape(-1), cols])
    order = order_by_row_then_value(all_r, all_d)
    all_r, all_d, all_i = all_r[order], all_d[order], all_i[order]
    counts = torch.bincount(all_r, minlength=end - start)
    slot = torch.arange(len(all_r)) - (torch.cumsum(counts, 0) - counts)[all_r]
    keep = torch.from_numpy(np.flatnonzero((slot < k).numpy()))
    cur_d[all_r[keep], slot[keep]] = all_d[keep]  # views: writes into best_d / best_i
    cur_i[all_r[keep], slot[keep]] = all_i[keep]


class _Graph(abc.ABC):
    """The full N x N distance relation: k-NN lists, row maxima, sparse pairs, q-g blocks."""

    num_query: int
    num_gallery: int

    @property
    def num_all(self) -> int:
        return self.num_query + self.num_gallery

    @abc.abstractmethod
    def knn(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices (N, k) nearest first, their distances, max over the row of d^2 (N,))."""

    @abc.abstractmethod
    def pair_distance(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Distances of the pairs ``(i[n], j[n])``."""

    @abc.abstractmethod
    def query_gallery(self, start: int, end: int) -> torch.Tensor:
        """The query-gallery distance rows ``start:end``."""


class FeatureGraph(_Graph):
    """From features. The query x gallery distances met during the k-NN pass are kept (to avoid a
    second GEMM) when ``cache_query_gallery`` is true, or by default when they fit in a quarter of
    the memory budget."""

    def __init__(self, query: torch.Tensor, gallery: torch.Tensor, metric: DistanceMetric, memory_budget_mb: float,
                 cache_query_gallery: bool | None = None, gemm_threads: int | None = None):
        self.gemm_threads = gemm_threads or torch.get_num_threads()  # the caller's setting, for the GEMMs
        self.features = torch.cat([query, gallery]).contiguous()
        self.num_query, self.num_gallery = query.shape[0], gallery.shape[0]
        self.metric = metric
        self.budget = memory_budget_mb
        size = self.num_query * self.num_gallery * self.features.element_size()
        if cache_query_gallery is None:
            cache_query_gallery = size <= memory_budget_mb * 2**20 / 4
        self._qg: torch.Tensor | None = None
        if cache_query_gallery and self.num_gallery:
            self._qg = torch.empty((self.num_query, self.num_gallery), dtype=self.features.dtype)
        self._qg_filled = False

    def _pairwise(self, sa: int, ea: int, sb: int, eb: int) -> torch.Tensor:
        with torch_threads(self.gemm_threads):
            return self.metric.pairwise(self.features[sa:ea], self.features[sb:eb])

    def _keep_query_gallery(self, block: torch.Tensor, sa: int, ea: int, sb: int, eb: int) -> None:
        nq = self.num_query
        if self._qg is None or sa >= nq or eb <= nq:
            return
        r_end, c_start = min(ea, nq), max(sb, nq)
        self._qg[sa:r_end, c_start - nq : eb - nq] = block[: r_end - sa, c_start - sb :]

    def knn(self, k: int):
        """Symmetric blocks: diagonal blocks first (exact top-k, giving each row a threshold), then
        each off-diagonal block once, keeping for both of its sides only the distances below the
        row's current k-th best (few after the first pass), merged block by block."""
        n = self.num_all
        side = min(n, max(16, int(math.sqrt(self.budget * 2**20 / 12))))  # block + masks: ~12 B/element
        side = -(-n // -(-n // side))  # as many blocks as needed, of balanced sizes
        starts = [(s, min(s + side, n)) for s in range(0, n, side)]
        best_d = torch.full((n, k), float("inf"), dtype=self.features.dtype)
        best_i = torch.full((n, k), -1, dtype=torch.int64)
        row_max = torch.zeros(n, dtype=self.features.dtype)
        for sa, ea in starts:
            block = self._pairwise(sa, ea, sa, ea)
            self._keep_query_gallery(block, sa, ea, sa, ea)
            d, i = torch.topk(block, min(k, ea - sa), dim=1, largest=False, sorted=True)
            best_d[sa:ea, : d.shape[1]], best_i[sa:ea, : d.shape[1]] = d, i + sa
            row_max[sa:ea] = _max_square(block, 1)
        for a, (sa, ea) in enumerate(starts):
            for sb, eb in starts[a + 1 :]:
                block = self._pairwise(sa, ea, sb, eb)
                self._keep_query_gallery(block, sa, ea, sb, eb)
                nonnegative = bool(block.amin() >= 0)
                row_max[sa:ea] = torch.maximum(row_max[sa:ea], _max_square(block, 1, nonnegative))
                row_max[sb:eb] = torch.maximum(row_max[sb:eb], _max_square(block, 0, nonnegative))
                cols = eb - sb
                block_np = block.numpy()  # numpy's comparisons are several times faster than torch's here
                flat = _flat_where(block_np < best_d[sa:ea, -1:].numpy())  # candidates for rows of block a
                if flat.numel():
                    r, c = flat // cols, flat % cols
                    _merge_rows(best_d, best_i, sa, ea, r, block.view(-1)[flat], c + sb)
                flat = _flat_where(block_np < best_d[sb:eb, -1][None, :].numpy())  # candidates for rows of block b
                if flat.numel():
                    r, c = flat // cols, flat % cols
                    _merge_rows(best_d, best_i, sb, eb, c, block.view(-1)[flat], r + sa)
                del block, block_np
        self._qg_filled = self._qg is not None
        return best_i, best_d, row_max

    def pair_distance(self, i, j):
        out = torch.empty(len(i), dtype=self.features.dtype)
        step = max(1, int(self.budget * 2**20 // (8 * self.features.shape[1] * self.features.element_size())))
        for s in range(0, len(i), step):
            out[s : s + step] = self.metric.rowwise(self.features[i[s : s + step]], self.features[j[s : s + step]])
        return out

    def query_gallery_buffer(self) -> torch.Tensor | None:
        """The cached query x gallery distances (to be overwritten by the final distances), if any."""
        return self._qg if self._qg_filled else None

    def query_gallery(self, start, end):
        if self._qg_filled:
            return self._qg[start:end]
        return self._pairwise(start, end, self.num_query, self.num_all)


class MatrixGraph(_Graph):
    """From given q-g, q-q and g-g distance matrices (as FastReID's ``re_ranking``)."""

    def __init__(self, q_g, q_q, g_g, memory_budget_mb: float):
        self.q_g = as_float_tensor(q_g, "q_g_dist")
        self.q_q = as_float_tensor(q_q, "q_q_dist")
        self.g_g = as_float_tensor(g_g, "g_g_dist")
        nq, ng = self.q_g.shape
        if self.q_q.shape != (nq, nq) or self.g_g.shape != (ng, ng):
            raise ValueError(
                f"distance shapes do not fit: q_g {tuple(self.q_g.shape)}, q_q {tuple(self.q_q.shape)}, "
                f"g_g {tuple(self.g_g.shape)}"
            )
        dtype = torch.promote_types(torch.promote_types(self.q_g.dtype, self.q_q.dtype), self.g_g.dtype)
        self.q_g, self.q_q, self.g_g = self.q_g.to(dtype), self.q_q.to(dtype), self.g_g.to(dtype)
        self.num_query, self.num_gallery = nq, ng
        self.budget = memory_budget_mb

    def _rows(self, start: int, end: int) -> torch.Tensor:
        nq = self.num_query
        parts = []
        if start < nq:
            e = min(end, nq)
            parts.append(torch.cat([self.q_q[start:e], self.q_g[start:e]], dim=1))
        if end > nq:
            s = max(start, nq)
            parts.append(torch.cat([self.q_g[:, s - nq : end - nq].t(), self.g_g[s - nq : end - nq]], dim=1))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def knn(self, k: int):
        n = self.num_all
        rows = rows_per_chunk(n, 3 * self.q_g.element_size(), self.budget)
        idx, dist, row_max = [], [], []
        for s in range(0, n, rows):
            block = self._rows(s, min(s + rows, n))
            d, i = torch.topk(block, k, dim=1, largest=False, sorted=True)
            idx.append(i)
            dist.append(d)
            row_max.append(_max_square(block, 1))
        return torch.cat(idx), torch.cat(dist), torch.cat(row_max)

    def pair_distance(self, i, j):
        nq = self.num_query
        out = torch.empty(len(i), dtype=self.q_g.dtype)
        iq, jq = i < nq, j < nq
        sel = iq & jq
        out[sel] = self.q_q[i[sel], j[sel]]
        sel = iq & ~jq
        out[sel] = self.q_g[i[sel], j[sel] - nq]
        sel = ~iq & jq
        out[sel] = self.q_g[j[sel], i[sel] - nq]
        sel = ~iq & ~jq
        out[sel] = self.g_g[i[sel] - nq, j[sel] - nq]
        return out

    def query_gallery(self, start, end):
        return self.q_g[start:end]


def feature_graph(query: torch.Tensor, gallery: torch.Tensor, metric: DistanceMetric, memory_budget_mb: float) -> FeatureGraph:
    return FeatureGraph(query, gallery, metric, memory_budget_mb)


def _k_reciprocal(knn: torch.Tensor, k: int, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward (N, k+1), is_reciprocal (N, k+1)): who among my k+1 nearest has me in theirs."""
    fwd = knn[:, : k + 1]
    rec = torch.empty(fwd.shape, dtype=torch.bool)
    for s in range(0, fwd.shape[0], chunk):
        f = fwd[s : s + chunk]
        me = torch.arange(s, s + f.shape[0])[:, None, None]
        rec[s : s + chunk] = (fwd[f] == me).any(dim=2)
    return fwd, rec


def _expansion_sets(knn: torch.Tensor, k1: int, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR (indptr, indices) of R*(i) for every item, indices ascending within a row."""
    n = knn.shape[0]
    half = int(np.around(k1 / 2.0))
    fwd, rec = _k_reciprocal(knn, k1)
    fwd_h, rec_h = _k_reciprocal(knn, half)
    size_h = rec_h.sum(1).double()
    keys = []
    for s in range(0, n, chunk):
        f, r = fwd[s : s + chunk], rec[s : s + chunk]  # (b, K1); R(i, k1) = f[r]
        b = f.shape[0]
        members = torch.sort(torch.where(r, f, -1), dim=1).values  # sorted; -1 = not a member
        cand_sets, cand_valid = fwd_h[f], rec_h[f]  # (b, K1, Kh): R(c, k1/2) of each candidate c
        flat = cand_sets.reshape(b, -1)
        pos = torch.searchsorted(members, flat).clamp_(max=members.shape[1] - 1)
        inside = (torch.gather(members, 1, pos) == flat).view_as(cand_sets) & cand_valid
        accept = r & (inside.sum(-1).double() > (2.0 / 3) * size_h[f])
        take = cand_valid & accept[..., None]
        row_ids = torch.arange(s, s + b)
        keys.append(row_ids[:, None].expand_as(f)[r] * n + f[r])
        keys.append(row_ids[:, None, None].expand_as(cand_sets)[take] * n + cand_sets[take])
    uniq = torch.unique(torch.cat(keys), sorted=True)
    rows = torch.div(uniq, n, rounding_mode="floor")
    indptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(torch.bincount(rows, minlength=n), 0)])
    return indptr, uniq - rows * n


def _csr_rows(indptr: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(indptr) - 1), indptr[1:] - indptr[:-1])


def _coalesce(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int):
    """Sum duplicate (row, col) entries in a fixed order (deterministic whatever the threads)."""
    key = rows * n + cols
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
    summed = torch.bincount(inverse, weights=vals, minlength=len(uniq))
    return torch.div(uniq, n, rounding_mode="floor"), uniq % n, summed


class SparseReranker:
    """Builds the sparse V (with local query expansion) once; then Jaccard blocks per query chunk.

    Rows of the Jaccard blocks are the graph's queries; columns the items from ``columns_from`` on
    (default: the gallery; 0: every item, for the Jaccard distance among one set)."""

    def __init__(self, graph: _Graph, params: RerankParams, memory_budget_mb: float = 1024,
                 columns_from: int | None = None) -> None:
        self.graph, self.params, self.budget = graph, params, memory_budget_mb
        n = graph.num_all
        self.columns_from = graph.num_query if columns_from is None else columns_from
        self.num_columns = n - self.columns_from
        k1_width = min(params.k1 + 1, n)
        k2 = min(params.k2, n)
        knn, knn_dist, self.row_max = graph.knn(max(k1_width, k2))
        indptr, cols = _expansion_sets(knn, params.k1)
        rows = _csr_rows(indptr)
        original = self._pair_distance(knn, knn_dist, rows, cols).float().square() / self.row_max[rows].float()
        weight = torch.exp(-original.double())
        norm = torch.bincount(rows, weights=weight, minlength=n)
        values = (weight / norm[rows]).float()
        if k2 > 1:
            rows, cols, values = self._query_expansion(knn[:, :k2], indptr, cols, values, n)
        self._build_lookup(rows, cols, values, n)

    def _pair_distance(self, knn, knn_dist, rows, cols):
        """d(i, j) for the pairs of R*(i): from the k-NN lists when there, computed otherwise."""
        out = torch.empty(len(rows), dtype=knn_dist.dtype)
        step = 1 << 20
        for s in range(0, len(rows), step):
            r, c = rows[s : s + step], cols[s : s + step]
            match = knn[r] == c[:, None]
            found = match.any(1)
            d = torch.gather(knn_dist[r], 1, match.to(torch.uint8).argmax(1, keepdim=True)).squeeze(1)
            missing = torch.nonzero(~found).squeeze(1)
            if missing.numel():
                d[missing] = self.graph.pair_distance(r[missing], c[missing]).to(d.dtype)
            out[s : s + step] = d
        return out

    @staticmethod
    def _query_expansion(neighbours, indptr, cols, values, n):
        """V_qe[i] = mean of V[j] over the k2 nearest j of i, chunked by rows of V_qe."""
        k2 = neighbours.shape[1]
        lengths = indptr[1:] - indptr[:-1]
        out_r, out_c, out_v = [], [], []
        chunk = max(1, 4_000_000 // max(1, int(lengths.max()) * k2))
        for s in range(0, n, chunk):
            src = neighbours[s : s + chunk].reshape(-1)  # rows of V to average
            dst = torch.arange(s, s + min(chunk, n - s)).repeat_interleave(k2)
            cnt = lengths[src]
            dst_e = dst.repeat_interleave(cnt)
            first = indptr[src].repeat_interleave(cnt)
            offset = torch.arange(int(cnt.sum())) - (torch.cumsum(cnt, 0) - cnt).repeat_interleave(cnt)
            pos = first + offset
            r, c, v = _coalesce(dst_e, cols[pos], values[pos].double(), n)
            out_r.append(r)
            out_c.append(c)
            out_v.append((v / k2).float())
        return torch.cat(out_r), torch.cat(out_c), torch.cat(out_v)

    def _build_lookup(self, rows, cols, values, n):
        nq = self.graph.num_query
        # query rows in CSR order; column items' rows grouped by column (CSC) with the item ascending
        q_sel = rows < nq
        self.q_rows, self.q_cols, self.q_vals = rows[q_sel], cols[q_sel], values[q_sel]
        self.q_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(torch.bincount(self.q_rows, minlength=nq), 0)])
        c_sel = rows >= self.columns_from
        g_rows, g_cols, g_vals = rows[c_sel] - self.columns_from, cols[c_sel], values[c_sel]
        order = torch.sort(g_cols, stable=True).indices
        self.g_rows, self.g_vals = g_rows[order], g_vals[order]
        self.col_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(torch.bincount(g_cols, minlength=n), 0)])
        col_count = self.col_ptr[1:] - self.col_ptr[:-1]
        # pairs each query row will expand to, to size chunks by memory
        self.pairs_per_query = torch.zeros(nq, dtype=torch.int64).index_add_(0, self.q_rows, col_count[self.q_cols])

    def min_sum(self, start: int, end: int) -> torch.Tensor:
        """``m[i, j] = sum_k min(V[i, k], V[j, k])`` for queries ``start..end-1`` and every column item."""
        ng = self.num_columns
        a, b = int(self.q_ptr[start]), int(self.q_ptr[end])
        r, c, v = self.q_rows[a:b] - start, self.q_cols[a:b], self.q_vals[a:b]
        cnt = self.col_ptr[c + 1] - self.col_ptr[c]
        rep_r = r.repeat_interleave(cnt)
        rep_v = v.repeat_interleave(cnt)
        offset = torch.arange(int(cnt.sum())) - (torch.cumsum(cnt, 0) - cnt).repeat_interleave(cnt)
        pos = self.col_ptr[c].repeat_interleave(cnt) + offset
        mins = torch.minimum(rep_v, self.g_vals[pos])
        flat = rep_r * ng + self.g_rows[pos]
        # bincount adds in input order: deterministic whatever the thread count
        return torch.bincount(flat, weights=mins, minlength=(end - start) * ng).view(end - start, ng)

    def final_block(self, start: int, end: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """``jaccard * (1 - lam) + original * lam``; jaccard is exactly 1 wherever ``m == 0``, so the
        dense part is ``original * lam + (1 - lam)`` and only entries with ``m > 0`` are corrected.
        Written into ``out`` (float32, (end-start, num_gallery)) when given; ``out`` may be the
        graph's cached distances of these rows (they are read once, element-wise, before being
        overwritten)."""
        lam = self.params.lambda_value
        final = torch.square(self.graph.query_gallery(start, end).float(), out=out)
        final.div_(self.row_max[start:end, None].float()).mul_(lam).add_(1 - lam)
        m = self.min_sum(start, end).view(-1)
        nz = torch.from_numpy(np.flatnonzero((m > 0).numpy()))
        mv = m[nz]
        final.view(-1)[nz] -= ((1 - lam) * (mv / (2 - mv))).float()
        return final

    def query_chunks(self) -> Iterator[tuple[int, int]]:
        """Query ranges whose dense block and expanded pairs fit in the memory budget."""
        ng = self.num_columns
        budget = self.budget * 2**20
        start, nq = 0, self.graph.num_query
        pairs = self.pairs_per_query.tolist()
        while start < nq:
            end, used = start, 0
            while end < nq:
                cost = ng * 32 + pairs[end] * 48
                if end > start and used + cost > budget:
                    break
                used += cost
                end += 1
            yield start, end
            start = end


class RerankedDistanceBlocks:
    """Re-ranked query x gallery distance blocks for :func:`evaluate_blocks`."""

    def __init__(self, graph: _Graph, params: RerankParams, memory_budget_mb: float = 1024,
                 num_threads: int | None = 1) -> None:
        self.num_threads = num_threads
        with torch_threads(num_threads):
            self.reranker = SparseReranker(graph, params, memory_budget_mb)
        self.num_query, self.num_gallery = graph.num_query, graph.num_gallery

    def blocks(self, rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        for s, e in self.reranker.query_chunks():
            for s2 in range(s, e, rows):
                e2 = min(e, s2 + rows)
                with torch_threads(self.num_threads):
                    block = self.reranker.final_block(s2, e2)
                yield s2, block

    def bytes_per_element(self) -> int:
        return 32


def _dense(graph: _Graph, params: RerankParams, memory_budget_mb: float, num_threads: int | None) -> np.ndarray:
    with torch_threads(num_threads):
        reranker = SparseReranker(graph, params, memory_budget_mb)
        out = graph.query_gallery_buffer() if isinstance(graph, FeatureGraph) else None
        if out is None or out.dtype != torch.float32:
            out = torch.empty((graph.num_query, graph.num_gallery), dtype=torch.float32)
        for s, e in reranker.query_chunks():
            reranker.final_block(s, e, out=out[s:e])
    return out.numpy()


def re_ranking(
    q_g_dist: np.ndarray | torch.Tensor,
    q_q_dist: np.ndarray | torch.Tensor,
    g_g_dist: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    memory_budget_mb: float = 1024,
    num_threads: int | None = 1,
) -> np.ndarray:
    """Re-ranked query x gallery distances (float32) from the three distance matrices."""
    graph = MatrixGraph(q_g_dist, q_q_dist, g_g_dist, memory_budget_mb)
    return _dense(graph, RerankParams(k1, k2, lambda_value), memory_budget_mb, num_threads)


def re_ranking_features(
    q_feats: np.ndarray | torch.Tensor,
    g_feats: np.ndarray | torch.Tensor,
    metric: str = "cosine",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    memory_budget_mb: float = 1024,
    num_threads: int | None = 1,
) -> np.ndarray:
    """Re-ranked query x gallery distances from features (``metric`` distances, see distance.py);
    GEMMs use the current torch thread setting, the rest ``num_threads``."""
    q, g, m = prepare_pair(q_feats, g_feats, get_metric(metric))
    graph = FeatureGraph(q, g, m, memory_budget_mb, cache_query_gallery=True)  # the output is dense anyway
    del q, g  # the graph holds its own concatenated copy
    return _dense(graph, RerankParams(k1, k2, lambda_value), memory_budget_mb, num_threads)


def jaccard_distances(
    features: np.ndarray | torch.Tensor,
    metric: str = "cosine",
    k1: int = 20,
    k2: int = 6,
    memory_budget_mb: float = 1024,
    num_threads: int | None = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-reciprocal Jaccard distances among ``features`` (N, D): step 5 of the re-ranking above with
    every item both query and gallery (the re-ranked distance with ``lambda = 0``), as a sparse CSR
    matrix ``(indptr (N+1,), indices, distances)`` holding the pairs whose distance is below 1, the
    diagonal (0) included; every other pair's distance is exactly 1. Memory: O(N * k) plus one
    query chunk's dense block, sized by ``memory_budget_mb``."""
    x, _, m = prepare_pair(features, features[:0], get_metric(metric))
    graph = FeatureGraph(x, x[:0], m, memory_budget_mb, cache_query_gallery=False)
    indptr, indices, distances = [np.zeros(1, dtype=np.int64)], [], []
    with torch_threads(num_threads):
        reranker = SparseReranker(graph, RerankParams(k1, k2, 0.0), memory_budget_mb, columns_from=0)
        for start, end in reranker.query_chunks():
            overlap = reranker.min_sum(start, end).numpy()
            rows, cols = np.nonzero(overlap > 0)
            shared = overlap[rows, cols]
            indices.append(cols.astype(np.int64))
            distances.append((1.0 - shared / (2.0 - shared)).clip(min=0.0).astype(np.float32))
            indptr.append(indptr[-1][-1] + np.cumsum(np.bincount(rows, minlength=end - start)))
    return np.concatenate(indptr), np.concatenate(indices), np.concatenate(distances)
