"""Exact k-nearest-neighbour search, memory-bounded, with ties broken by the smaller gallery index.

Why not a chunked ``torch.topk``: equal distances at the k-th place come out in an unspecified
order, and a full top-k pass costs several ns per distance on a CPU. Here each distance tile is
compared with the running k-th best distance of its rows (one SIMD comparison per distance); only
the few survivors are merged into the running lists, ordered by ``(distance, gallery index)``. A
row's first tile sets its threshold from the tile's own k-th value, so nothing is extracted in bulk
(in the symmetric search: the k-th of everything its diagonal tile offers it, row and column).

When the query set *is* the gallery (``gallery=None``), the distance of a pair ``i < j`` is computed
once (as row ``i``, column ``j``) and serves both rows, halving the GEMM work, and every item is
masked from its own row by its index (never by dropping the top hit). Distances come from the
registered metric (:mod:`omnireid.evaluation.distance`), like every other evaluation path.

Threads: the GEMMs use the caller's torch thread setting; the selection of a tile is split into
independent tasks (slabs of rows, and the mirrored columns, which update disjoint running lists)
run by ``num_threads`` Python threads, each on one torch thread. Separate single-threaded tasks keep
both cores busy without the synchronisation that makes torch's multi-threaded element-wise ops slow
down when the cores are shared.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .distance import DistanceMetric, get_metric, prepare_features, torch_threads
from .rank import _ordered_bits, rows_per_chunk

# Largest tile side: big enough for an efficient GEMM, small enough for the thresholds to tighten early.
MAX_TILE = 4096
# Working bytes per tile element: the distance (float32) and the candidate mask.
_TILE_BYTES_PER_ELEMENT = 5
# Bytes per kept neighbour: distance (float64 at most) + index.
_STATE_BYTES_PER_NEIGHBOUR = 16


@dataclass
class Neighbours:
    """Per query, the ``k`` nearest gallery items by ``(distance, index)``; ``index == -1`` (distance
    ``inf``) where the gallery holds fewer than ``k`` candidates for that query."""

    distances: torch.Tensor  # (num_query, k)
    indices: torch.Tensor  # (num_query, k) int64


class _RunningTopK:
    """The k smallest ``(distance, index)`` pairs seen so far for each of ``rows`` rows."""

    def __init__(self, rows: int, k: int, num_gallery: int, dtype: torch.dtype) -> None:
        self.k = k
        self.sentinel = num_gallery  # index of an empty slot: sorts after every real item at equal distance
        self.values = torch.full((rows, k), float("inf"), dtype=dtype)
        self.indices = torch.full((rows, k), num_gallery, dtype=torch.int64)
        # an upper bound of each row's final k-th distance known before its lists fill (the k-th
        # smallest of values that will all be offered to it): a tight threshold from the start
        self.bounds = torch.full((rows,), float("inf"), dtype=dtype)
        self._index_bits = max(1, num_gallery.bit_length())

    def thresholds(self, rows: slice | torch.Tensor) -> torch.Tensor:
        """The current k-th best distance of ``rows`` (or its known bound): anything larger can never enter."""
        return torch.minimum(self.values[rows, self.k - 1], self.bounds[rows])

    def merge(self, cand_rows: torch.Tensor, cand_values: torch.Tensor, cand_indices: torch.Tensor) -> None:
        """Merge candidates (global state rows, in any order) into the running lists."""
        if cand_rows.numel() == 0:
            return
        urows, local = torch.unique(cand_rows, sorted=True, return_inverse=True)
        n, k = len(urows), self.k
        state_v, state_i = self.values[urows], self.indices[urows]
        all_rows = torch.cat([torch.arange(n).repeat_interleave(k), local])
        all_v = torch.cat([state_v.reshape(-1), cand_values.to(state_v.dtype)])
        all_i = torch.cat([state_i.reshape(-1), cand_indices])
        order = self._order(all_rows, all_v, all_i, n)
        counts = k + torch.bincount(local, minlength=n)
        start = torch.cumsum(counts, 0) - counts
        take = order[(start[:, None] + torch.arange(k)[None, :]).reshape(-1)]
        self.values[urows] = all_v[take].view(n, k)
        self.indices[urows] = all_i[take].view(n, k)

    def _order(self, rows: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, num_rows: int) -> torch.Tensor:
        """Permutation sorting by ``(row, value, index)``."""
        row_bits = max(1, (num_rows - 1).bit_length())
        if values.dtype == torch.float32 and row_bits + 32 + self._index_bits <= 63:
            key = (rows << (32 + self._index_bits)) | (_ordered_bits(values) << self._index_bits) | indices
            return torch.sort(key).indices
        order = torch.sort(indices, stable=True).indices
        order = order[torch.sort(values[order], stable=True).indices]
        return order[torch.sort(rows[order], stable=True).indices]

    def result(self) -> Neighbours:
        empty = self.indices == self.sentinel
        return Neighbours(self.values, torch.where(empty, torch.full_like(self.indices, -1), self.indices))


def _candidates(mask: np.ndarray) -> np.ndarray:
    """Flat positions of the True entries of a C-contiguous bool array, fast when they are few:
    the array is scanned 8 bytes at a time and only non-zero words are expanded."""
    flat = mask.reshape(-1)
    if flat.size % 8:
        return np.flatnonzero(flat)
    words = np.flatnonzero(flat.view(np.uint64))
    expanded = (words[:, None] * 8 + np.arange(8)[None, :]).reshape(-1)
    return expanded[flat[expanded]]


def _offer(state: _RunningTopK, block: torch.Tensor, state0: int, item0: int, valid: torch.Tensor | None,
           mask_buffer: np.ndarray, transposed: bool = False) -> None:
    """Offer the distances of ``block`` to the running lists.

    The state rows are the block's rows (``transposed=False``) or its columns (``transposed=True``:
    the same block serves the mirrored pairs without a transposed copy), numbered from ``state0``;
    the other axis holds gallery items numbered from ``item0``. ``valid`` marks the pairs to offer.
    """
    view = block.t() if transposed else block
    n_state = view.shape[0]
    threshold = state.thresholds(slice(state0, state0 + n_state)).clone()
    fresh = torch.isinf(threshold)
    if fresh.any():
        # a row's first tile: its own k-th valid distance bounds what can enter
        # (columns are gathered from the contiguous block, never through its transposed view)
        sub = block[:, fresh].t() if transposed else block[fresh]
        if valid is not None:
            sub.masked_fill_(~(valid[:, fresh].t() if transposed else valid[fresh]), float("inf"))
        if sub.shape[1] >= state.k:
            kth = torch.topk(sub, state.k, dim=1, largest=False, sorted=True).values[:, state.k - 1]
            threshold[fresh] = torch.minimum(threshold[fresh], kth.to(threshold.dtype))
    rows_count, cols = block.shape
    mask = mask_buffer[: rows_count * cols].reshape(rows_count, cols)
    thr = threshold.to(block.dtype).numpy()
    np.less_equal(block.numpy(), thr[None, :] if transposed else thr[:, None], out=mask)
    if valid is not None:
        np.logical_and(mask, valid.numpy(), out=mask)
    flat = torch.from_numpy(_candidates(mask))
    r = torch.div(flat, cols, rounding_mode="floor")
    c = flat - r * cols
    values = block[r, c]  # the block may be a column slab (not contiguous)
    if transposed:
        state.merge(c + state0, values, r + item0)
    else:
        state.merge(r + state0, values, c + item0)


def _tile_size(num_items: int, memory_budget_mb: float, element_size: int, workers: int) -> int:
    # the tile and the selection tasks' candidate masks (one tile's worth per direction)
    per_element = element_size + _TILE_BYTES_PER_ELEMENT - 1 + min(workers, 2)
    side = int((memory_budget_mb * 2**20 / (2 * per_element)) ** 0.5)
    return max(min(MAX_TILE, num_items, side), 1)


class _Workers:
    """Runs independent selection tasks on ``count`` threads (the caller's included)."""

    def __init__(self, count: int) -> None:
        self.count = count
        # torch.set_num_threads in each worker: OpenMP's thread count is per calling thread, so a
        # fresh thread would otherwise run torch ops on a team of its own (oversubscribed, spinning)
        self._pool = ThreadPoolExecutor(count - 1, thread_name_prefix="knn", initializer=torch.set_num_threads,
                                        initargs=(1,)) if count > 1 else None

    def run(self, tasks: list[Callable[[], None]]) -> None:
        if self._pool is None or len(tasks) == 1:
            for task in tasks:
                task()
            return
        # Grad and inference modes are thread-local: run the workers in the caller's, or their in-place
        # updates of the caller's inference tensors fail (evaluation runs under torch.inference_mode).
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def in_callers_mode(task: Callable[[], None]) -> None:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                task()

        futures = [self._pool.submit(in_callers_mode, task) for task in tasks[1:]]
        tasks[0]()
        for future in futures:
            future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


class _Selection:
    """Offers tiles to the running lists, split into slabs that update disjoint rows of the state:
    with ``mirrored`` tiles (the symmetric search), row slabs and column slabs."""

    def __init__(self, state: _RunningTopK, tile: int, workers: _Workers, mirrored: bool) -> None:
        self.state, self.workers, self.mirrored = state, workers, mirrored
        count = workers.count
        self.row_pieces = max(1, count // 2) if mirrored else count
        self.col_pieces = max(1, count - self.row_pieces)
        # one candidate mask per concurrent task: two tiles' worth in all (one with a single thread,
        # whose tasks run one after another)
        self.row_buffers = [np.empty(-(-tile // self.row_pieces) * tile, dtype=bool) for _ in range(self.row_pieces)]
        self.col_buffers = self.row_buffers if count == 1 or not mirrored else \
            [np.empty(-(-tile // self.col_pieces) * tile, dtype=bool) for _ in range(self.col_pieces)]

    def _tasks(self, block: torch.Tensor, row0: int, col0: int, valid: torch.Tensor | None,
               buffers: list[np.ndarray], transposed: bool) -> list[Callable[[], None]]:
        """Tasks offering ``block`` to the state rows of its rows (or of its columns, ``transposed``),
        one slab per buffer."""
        length = block.shape[1 if transposed else 0]
        step = -(-length // len(buffers))
        tasks = []
        for a, buffer in zip(range(0, length, step), buffers):
            part = block[:, a : a + step] if transposed else block[a : a + step]
            part_valid = None if valid is None else (valid[:, a : a + step] if transposed else valid[a : a + step])
            tasks.append(lambda part=part, part_valid=part_valid, a=a, buffer=buffer: _offer(
                self.state, part, row0 + a, col0, part_valid, buffer, transposed=transposed))
        return tasks

    def _symmetrize_diagonal(self, block: torch.Tensor, row0: int, valid: torch.Tensor) -> bool:
        """Make each row of a diagonal tile hold every distance the tile offers its item (its row
        right of the diagonal, its column above it; itself at ``inf``) and bound the item by their
        k-th smallest: its first threshold, as tight as the whole tile. False (tile unchanged) when
        the tile offers fewer than k distances per item.

        Bounding by the row's own part alone leaves the last rows of the tile, with few pairs right
        of the diagonal, loose thresholds that let most of their column through. The upper triangle
        is mirrored into the lower one (pairs computed once, copied exactly), square by square so
        that the transposed reads stay in cache; row slabs are tasks on the selection threads (each
        writes its own rows, reads only above the diagonal).
        """
        n, k = block.shape[0], self.state.k
        if n - 1 < k:
            return False
        step = min(n, 256)

        def bound(a: int) -> None:
            b = min(a + step, n)
            for c in range(0, a, step):
                block[a:b, c : c + step].copy_(block[c : c + step, a:b].t())
            square = block[a:b, a:b]
            square.copy_(torch.where(valid[a:b, a:b], square, square.t()))
            rows = block[a:b]
            rows.diagonal(offset=a).fill_(float("inf"))  # the item itself
            kth = torch.topk(rows, k, dim=1, largest=False, sorted=False).values.amax(dim=1)
            self.state.bounds[row0 + a : row0 + b] = kth.to(self.state.bounds.dtype)

        self.workers.run([lambda a=a: bound(a) for a in range(0, n, step)])
        return True

    def offer(self, block: torch.Tensor, row0: int, col0: int, valid: torch.Tensor | None = None) -> None:
        """Offer ``block`` (rows ``row0..``, columns ``col0..``) to its rows and, when mirrored, to
        its columns as rows (the pair ``(i, j)`` serves row ``j`` too)."""
        if self.mirrored and row0 == col0 and self._symmetrize_diagonal(block, row0, valid):
            # a symmetric tile: one pass by rows (each item itself is inf, above its finite bound), on every buffer
            buffers = self.row_buffers + (self.col_buffers if self.col_buffers is not self.row_buffers else [])
            self.workers.run(self._tasks(block, row0, col0, None, buffers, transposed=False))
            return
        rows = self._tasks(block, row0, col0, valid, self.row_buffers, transposed=False)
        if not self.mirrored:
            self.workers.run(rows)
            return
        cols = self._tasks(block, col0, row0, valid, self.col_buffers, transposed=True)
        if row0 == col0:  # a small diagonal tile: its rows and columns are the same lists
            self.workers.run(rows)
            self.workers.run(cols)
        else:
            self.workers.run(rows + cols)


def nearest_neighbours(
    query: np.ndarray | torch.Tensor,
    gallery: np.ndarray | torch.Tensor | None,
    k: int,
    metric: str | DistanceMetric = "cosine",
    memory_budget_mb: float = 1024,
    exclude_self: bool | None = None,
    num_threads: int | None = None,
) -> Neighbours:
    """The ``k`` nearest gallery items of every query, exact, ties by the smaller gallery index.

    ``gallery=None``: the query set is the gallery and each item is excluded from its own list by
    its index. ``memory_budget_mb`` bounds the live distance tile (the result itself is
    ``num_query x k``). ``num_threads``: selection threads (None: the torch thread setting).
    """
    m = get_metric(metric) if isinstance(metric, str) else metric
    q = prepare_features(query, m, "query features")
    g = None if gallery is None else prepare_features(gallery, m, "gallery features")
    return search_prepared(q, g, k, m, memory_budget_mb, exclude_self, num_threads)


def search_prepared(q: torch.Tensor, g: torch.Tensor | None, k: int, metric: DistanceMetric,
                    memory_budget_mb: float = 1024, exclude_self: bool | None = None,
                    num_threads: int | None = None) -> Neighbours:
    """:func:`nearest_neighbours` on features already prepared by ``metric`` (e.g. L2-normalised)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    same = g is None
    g = q if g is None else g
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features are {q.shape[1]}-d but gallery features are {g.shape[1]}-d")
    if q.dtype != g.dtype:
        q, g = q.double(), g.double()
    exclude_self = same if exclude_self is None else exclude_self
    if exclude_self and q.shape[0] > g.shape[0]:
        raise ValueError(f"exclude_self needs the queries to be the first gallery items, got {q.shape[0]} queries "
                         f"and {g.shape[0]} gallery items")
    gemm_threads = torch.get_num_threads()  # the caller's setting, for the GEMMs only
    workers = _Workers(num_threads or gemm_threads)
    tile = _tile_size(max(q.shape[0], g.shape[0]), memory_budget_mb, q.element_size(), workers.count)
    state_bytes = q.shape[0] * k * _STATE_BYTES_PER_NEIGHBOUR
    try:
        with torch_threads(1):  # each selection task on one torch thread
            if same and state_bytes <= memory_budget_mb * 2**20:
                return _symmetric_search(q, k, metric, tile, gemm_threads, workers)
            return _one_sided_search(q, g, k, metric, tile, exclude_self, memory_budget_mb, gemm_threads, workers)
    finally:
        workers.close()


def _gemm(metric: DistanceMetric, x: torch.Tensor, y: torch.Tensor, threads: int, buffer: torch.Tensor) -> torch.Tensor:
    out = buffer[: x.shape[0] * y.shape[0]].view(x.shape[0], y.shape[0])
    with torch_threads(threads):
        return metric.pairwise(x, y, out=out)


def _symmetric_search(x: torch.Tensor, k: int, metric: DistanceMetric, tile: int, gemm_threads: int,
                      workers: _Workers) -> Neighbours:
    """Every pair ``i < j`` computed once in an upper-triangle tile and offered to both rows.

    Tiles go column block by column block, the diagonal tile first, so that a row block meets its
    first distances as rows of a diagonal tile (cheap thresholds; no gather of block columns).
    """
    n = x.shape[0]
    state = _RunningTopK(n, k, n, x.dtype)
    selection = _Selection(state, tile, workers, mirrored=True)
    out = torch.empty(tile * tile, dtype=x.dtype)
    upper = torch.ones(tile, tile, dtype=torch.bool).triu_(1)
    for j in range(0, n, tile):
        xj = x[j : j + tile]
        for i in [j, *range(0, j, tile)]:
            block = _gemm(metric, x[i : i + tile], xj, gemm_threads, out)
            valid = upper[: block.shape[0], : block.shape[1]] if i == j else None
            selection.offer(block, i, j, valid)
    return state.result()


def _one_sided_search(q: torch.Tensor, g: torch.Tensor, k: int, metric: DistanceMetric, tile: int,
                      exclude_self: bool, memory_budget_mb: float, gemm_threads: int,
                      workers: _Workers) -> Neighbours:
    """Query chunks swept over gallery tiles; the running lists of one chunk at a time."""
    nq, ng = q.shape[0], g.shape[0]
    chunk = max(tile, min(nq, rows_per_chunk(k, _STATE_BYTES_PER_NEIGHBOUR, memory_budget_mb / 2)))
    distances, indices = [], []
    out = torch.empty(tile * tile, dtype=q.dtype)
    for c0 in range(0, nq, chunk):
        qc = q[c0 : c0 + chunk]
        state = _RunningTopK(qc.shape[0], k, ng, q.dtype)
        selection = _Selection(state, tile, workers, mirrored=False)
        for i in range(0, qc.shape[0], tile):
            qi = qc[i : i + tile]
            for j in range(0, ng, tile):
                block = _gemm(metric, qi, g[j : j + tile], gemm_threads, out)
                valid = None
                if exclude_self and j < c0 + i + qi.shape[0] and c0 + i < j + block.shape[1]:
                    rows = torch.arange(c0 + i, c0 + i + qi.shape[0])[:, None]
                    valid = rows != torch.arange(j, j + block.shape[1])[None, :]
                selection.offer(block, i, j, valid)
        res = state.result()
        distances.append(res.distances)
        indices.append(res.indices)
    return Neighbours(torch.cat(distances), torch.cat(indices))


def without_own_index(distances: torch.Tensor, indices: torch.Tensor, own: torch.Tensor) -> Neighbours:
    """Lists of ``k + 1`` without each query's own index ``own`` (or without the last entry when
    the query is not in its list: ``k + 1`` items at least as near came first)."""
    is_self = indices == own[:, None]
    is_self[~is_self.any(dim=1), -1] = True
    keep = ~is_self
    n, width = indices.shape
    return Neighbours(distances[keep].view(n, width - 1), indices[keep].view(n, width - 1))
