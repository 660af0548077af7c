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

Screening: on CPUs with bfloat16 matrix instructions (AMX / AVX512-BF16, ~6x the float32 GEMM
rate), a tile is a bfloat16 GEMM of the metric's dot form (:meth:`DistanceMetric.dot_operand`)
compared with the thresholds widened by a proven error bound; only its survivors are rescored, in
float64 from the same operands (see :class:`_Screen`). The lists are exact: no neighbour is lost, and
distances are the float64 values rounded to the features' dtype, so ties (equal features) stay ties.

Threads: the GEMMs use the caller's torch thread setting; the selection of a tile is split into
independent tasks (slabs of rows, and the mirrored columns, which update disjoint running lists)
run by ``num_threads`` Python threads, each on one torch thread. Separate single-threaded tasks keep
both cores busy without the synchronisation that makes torch's multi-threaded element-wise ops slow
down when the cores are shared.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from omnireid.utils.hardware import cpu_has_native_bf16

from .distance import DistanceMetric, get_metric, prepare_features, torch_threads
from .rank import _ordered_bits, rows_per_chunk

# Largest tile side: big enough for an efficient GEMM, small enough for the thresholds to tighten
# early. Screened (bfloat16) tiles are twice as wide: half the bytes per distance, and the fewer,
# wider tiles give tighter first thresholds (diagonal tiles), so fewer candidates to rescore.
MAX_TILE = 4096
MAX_SCREENED_TILE = 8192
# Rows of a block's screening operands made at a time.
_OPERAND_CHUNK = 1024
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


class _Tile:
    """A distance tile of queries ``row0..`` x gallery items ``col0..``, as the selection compares it:
    here the exact distances themselves (see :class:`_ScreenedTile`)."""

    screened = False
    bounded = True  # False: every key passes, so no value (``inf`` included) can mark a pair as never offered

    def __init__(self, block: torch.Tensor, row0: int, col0: int) -> None:
        self.block, self.row0, self.col0 = block, row0, col0

    def keys(self, part: torch.Tensor) -> np.ndarray:
        """``part`` of the block as the array compared with :meth:`limits`."""
        return part.numpy()

    def limits(self, thresholds: torch.Tensor) -> np.ndarray:
        """Per state row, the largest key that may hold a distance ``<= threshold``."""
        return thresholds.to(self.block.dtype).numpy()

    def bound(self, values: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
        """Per row of ``values`` (rows of the block), an upper bound of the k-th smallest exact distance
        among them: the k-th smallest key (a partial sort, several times faster than ``torch.topk``)."""
        kth = np.partition(self.keys(values), k - 1, axis=1)[:, k - 1]
        return self._bound_of_key(torch.from_numpy(kth), dtype)

    def _bound_of_key(self, kth: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return kth.to(dtype)

    def values(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The exact distances of the block entries ``(rows, cols)``."""
        return self.block[rows, cols]


class _ScreenedTile(_Tile):
    """A bfloat16 screening tile (:class:`_Screen`) with the float64 operands to rescore its entries."""

    screened = True

    def __init__(self, block: torch.Tensor, row0: int, col0: int, screen: _Screen, left: torch.Tensor,
                 right: torch.Tensor, margin: float) -> None:
        super().__init__(block, row0, col0)
        self.screen, self.left, self.right, self.margin = screen, left, right, margin
        self.bounded = margin < float("inf")

    def keys(self, part: torch.Tensor) -> np.ndarray:
        # bfloat16 bits as int16 order every value below a non-negative limit correctly (negative
        # values have negative codes), and numpy compares int16 at twice float32's rate
        return part.view(torch.int16).numpy()

    def limits(self, thresholds: torch.Tensor) -> np.ndarray:
        if self.margin == float("inf"):  # no bound: every pair is rescored (NaN codes included)
            return np.full(thresholds.shape[0], np.iinfo(np.int16).max, dtype=np.int16)
        widened = (thresholds.double() + self.margin).clamp_min(0)  # below 0: anything negative passes
        bits = _round_up(widened, torch.float32).view(torch.int32).long()
        return ((bits + 0xFFFF) >> 16).to(torch.int16).numpy()  # the smallest bfloat16 >= the float32

    def _bound_of_key(self, kth: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # a negative k-th code: k values are negative (their codes order them backwards), and 0 bounds them;
        # the accumulated value is below the next bfloat16 (ulp <= 2**-7 of the value, 2**-133 if subnormal)
        if self.margin == float("inf"):
            return torch.full(kth.shape, float("inf"), dtype=dtype)
        value = kth.clamp_min(0).view(torch.bfloat16).double()
        return _round_up(value + value * 2.0**-7 + 2.0**-120 + self.margin, dtype)

    def values(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.screen.rescore(self.left, self.right, rows, cols)


def _round_up(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float64 ``values`` in ``dtype``, rounded up (a bound stays a bound)."""
    out = values.to(dtype)
    low = out.double() < values
    if bool(low.any()):
        out[low] = torch.nextafter(out[low], torch.full_like(out[low], float("inf")))
    return out


def _offer(state: _RunningTopK, tile: _Tile, a: int, b: int, valid: torch.Tensor | None,
           mask_buffer: np.ndarray, transposed: bool = False) -> None:
    """Offer the block's rows ``a..b`` (``transposed``: its columns ``a..b``, the mirrored pairs,
    without a transposed copy) to the running lists of their items. ``valid`` marks the pairs to offer."""
    block = tile.block
    part = block[:, a:b] if transposed else block[a:b]
    state0 = (tile.col0 if transposed else tile.row0) + a
    n_state = part.shape[1 if transposed else 0]
    threshold = state.thresholds(slice(state0, state0 + n_state)).clone()
    fresh = torch.isinf(threshold)
    if fresh.any():
        # a row's first tile: its own k-th valid distance bounds what can enter
        # (columns are gathered from the contiguous block, never through its transposed view)
        sub = part[:, fresh].t() if transposed else part[fresh]
        if valid is not None:
            sub.masked_fill_(~(valid[:, fresh].t() if transposed else valid[fresh]), float("inf"))
        if sub.shape[1] >= state.k:
            threshold[fresh] = torch.minimum(threshold[fresh], tile.bound(sub, state.k, threshold.dtype))
    rows_count, cols = part.shape
    mask = mask_buffer[: rows_count * cols].reshape(rows_count, cols)
    limits = tile.limits(threshold)
    np.less_equal(tile.keys(part), limits[None, :] if transposed else limits[:, None], out=mask)
    if valid is not None:
        np.logical_and(mask, valid.numpy(), out=mask)
    flat = torch.from_numpy(np.flatnonzero(mask))  # numpy's SIMD scan of a bool array: ~0.1 ns per entry
    r = torch.div(flat, cols, rounding_mode="floor")
    c = flat - r * cols
    if transposed:
        c += a
    else:
        r += a
    values = tile.values(r, c)
    own = c if transposed else r  # the block axis of the state rows
    if tile.screened:  # the screen lets through a margin: only what can still enter is merged
        keep = values <= threshold[own - a]
        r, c, own, values = r[keep], c[keep], own[keep], values[keep]
    if transposed:
        state.merge(own + tile.col0, values, r + tile.row0)
    else:
        state.merge(own + tile.row0, values, c + tile.col0)


def _tile_size(num_items: int, memory_budget_mb: float, element_size: int, workers: int, largest: int) -> int:
    # the tile and the selection tasks' candidate masks (one tile's worth per direction)
    per_element = element_size + _TILE_BYTES_PER_ELEMENT - 1 + min(workers, 2)
    side = int((memory_budget_mb * 2**20 / (2 * per_element)) ** 0.5)
    return max(min(largest, num_items, side), 1)


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

    def _tasks(self, tile: _Tile, valid: torch.Tensor | None, buffers: list[np.ndarray],
               transposed: bool) -> list[Callable[[], None]]:
        """Tasks offering ``tile`` to the state rows of its rows (or of its columns, ``transposed``),
        one slab per buffer."""
        length = tile.block.shape[1 if transposed else 0]
        step = -(-length // len(buffers))
        tasks = []
        for a, buffer in zip(range(0, length, step), buffers):
            part_valid = None if valid is None else (valid[:, a : a + step] if transposed else valid[a : a + step])
            tasks.append(lambda a=a, part_valid=part_valid, buffer=buffer: _offer(
                self.state, tile, a, min(a + step, length), part_valid, buffer, transposed=transposed))
        return tasks

    def _symmetrize_diagonal(self, tile: _Tile, valid: torch.Tensor) -> bool:
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
        block, row0 = tile.block, tile.row0
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
            self.state.bounds[row0 + a : row0 + b] = tile.bound(rows, k, self.state.bounds.dtype)

        self.workers.run([lambda a=a: bound(a) for a in range(0, n, step)])
        return True

    def offer(self, tile: _Tile, valid: torch.Tensor | None = None) -> None:
        """Offer ``tile`` to its rows and, when mirrored, to its columns as rows (the pair ``(i, j)``
        serves row ``j`` too)."""
        diagonal = tile.row0 == tile.col0
        if self.mirrored and diagonal and tile.bounded and self._symmetrize_diagonal(tile, valid):
            # a symmetric tile: one pass by rows (each item itself is inf, above its finite bound), on every buffer
            buffers = self.row_buffers + (self.col_buffers if self.col_buffers is not self.row_buffers else [])
            self.workers.run(self._tasks(tile, None, buffers, transposed=False))
            return
        rows = self._tasks(tile, valid, self.row_buffers, transposed=False)
        if not self.mirrored:
            self.workers.run(rows)
            return
        cols = self._tasks(tile, valid, self.col_buffers, transposed=True)
        if diagonal:  # a small diagonal tile: its rows and columns are the same lists
            self.workers.run(rows)
            self.workers.run(cols)
        else:
            self.workers.run(rows + cols)


@dataclass
class _Operand:
    """A block's operands of the metric's dot form: bfloat16 (screening) and float64 (rescoring), with
    the largest row norms of the float64 operand, of its bfloat16 rounding error and of the bfloat16 one."""

    low: torch.Tensor
    exact: torch.Tensor
    norm: float
    error: float
    low_norm: float

    @staticmethod
    def of(metric: DistanceMetric, rows: torch.Tensor, side: str, workers: _Workers) -> _Operand:
        """Made chunk by chunk, as tasks on ``workers`` (fresh block-sized temporaries would cost more
        in page faults than in arithmetic)."""
        parts: dict[int, tuple[torch.Tensor, torch.Tensor, float, float]] = {}

        def make(a: int) -> None:
            exact = metric.dot_operand(rows[a : a + _OPERAND_CHUNK].double(), side)
            low = exact.to(torch.bfloat16)
            error = torch.linalg.vector_norm(low.double().sub_(exact), dim=1).max()
            parts[a] = (exact, low, float(torch.linalg.vector_norm(exact, dim=1).max()), float(error))

        tasks = [lambda a=a: make(a) for a in range(0, rows.shape[0], _OPERAND_CHUNK)]
        workers.run(tasks)
        chunks = [parts[a] for a in sorted(parts)]
        norm, error = max(c[2] for c in chunks), max(c[3] for c in chunks)
        return _Operand(torch.cat([c[1] for c in chunks]), torch.cat([c[0] for c in chunks]), norm, error,
                        norm + error)  # |a~| <= |a| + |a - a~|


class _Screen:
    """Screening of distance tiles by a bfloat16 GEMM with a proven error bound.

    With the metric's dot form ``d(x, y) = a(x) . b(y)``, a tile is ``a~ . b~`` with ``a~, b~`` the
    operands rounded to bfloat16, accumulated in float32 over ``K`` terms and rounded to bfloat16.
    With ``e = a - a~`` (from the float64 operands), ``|a~.b~ - a.b| <= |e_a||b| + |a||e_b| +
    |e_a||e_b|`` (Cauchy-Schwarz) and the accumulation adds at most ``gamma_K |a~||b~|``: a tile's
    ``margin`` is that bound over its pairs, plus the rounding of a rescored distance to the features'
    dtype. A pair of exact distance ``d <= thr`` therefore has an accumulated value ``<= thr + margin``,
    and any faithful rounding of it to bfloat16 is ``<= round_up(thr + margin)``: tiles compared with
    these limits lose no neighbour. Survivors are rescored in float64 from the same operands (a
    sampled GEMM) and rounded once to the features' dtype.

    Operands are made per block and kept while their tiles are made; with ``keep_rows`` (the
    symmetric search) the row blocks are kept throughout (every column block meets them again).
    """

    element_size, max_tile = 2, MAX_SCREENED_TILE  # bfloat16 tiles

    def __init__(self, metric: DistanceMetric, q: torch.Tensor, g: torch.Tensor, workers: _Workers,
                 keep_rows: bool) -> None:
        self.metric, self.q, self.g, self.dtype = metric, q, g, q.dtype
        self.workers, self.keep_rows = workers, keep_rows
        self._left: dict[tuple[int, int], _Operand] = {}
        self._right: tuple[tuple[int, int], _Operand] | None = None

    @staticmethod
    def create(metric: DistanceMetric, q: torch.Tensor, g: torch.Tensor, k: int, enabled: bool | None,
               workers: _Workers, keep_rows: bool = False) -> _Screen | None:
        """A screen when the metric has a dot form and ``enabled`` (None: when the CPU has bfloat16
        matrix instructions and :meth:`_saves_work`); None otherwise."""
        if enabled is False or not len(q) or not len(g) or metric.dot_operand(q[:1], "left") is None:
            return None
        if enabled is None and not cpu_has_native_bf16():
            return None
        with warnings.catch_warnings():  # torch warns once per process that sparse CSR support is in beta
            warnings.simplefilter("ignore", UserWarning)
            torch.sparse_csr_tensor(torch.zeros(2, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                                    torch.zeros(0), (1, 1), check_invariants=False)
        screen = _Screen(metric, q, g, workers, keep_rows)
        return screen if enabled or screen._saves_work(k) else None

    def _saves_work(self, k: int) -> bool:
        """Whether few enough pairs pass the screen for it to beat exact tiles (a rescored pair costs
        ~40 exact ones): on a sample of queries against a sample of the gallery, the pairs within two
        margins of each query's estimated k-th distance, scaled to the whole gallery, are at most 1% of
        it. Not so, e.g., for squared L2 distances of features far from the origin: the margin scales
        with the squared norms, the distances only with the spread."""
        num_gallery = self.g.shape[0]
        rows = torch.linspace(0, self.q.shape[0] - 1, min(self.q.shape[0], 128)).long()
        cols = torch.linspace(0, num_gallery - 1, min(num_gallery, 4096)).long()
        left = _Operand.of(self.metric, self.q[rows], "left", self.workers)
        right = _Operand.of(self.metric, self.g[cols], "right", self.workers)
        screened = (left.low @ right.low.t()).float()
        rank = min(len(cols), max(1, round(k * len(cols) / num_gallery)))  # where the k-th falls in the sample
        kth = screened.kthvalue(rank, dim=1).values
        limit = kth + kth.abs() * 2.0**-7 + 2 * self._margin(left, right)
        passing = (screened <= limit[:, None]).sum(dim=1).double().mean() * num_gallery / len(cols)
        return float(passing) * 100 <= num_gallery

    def allocate(self, tile: int, threads: int) -> None:
        """As :meth:`_ExactTiles.allocate`."""
        self.buffer, self.threads = torch.empty(tile * tile, dtype=torch.bfloat16), threads

    def _operands(self, i: int, j: int, rows: int, cols: int) -> tuple[_Operand, _Operand]:
        if (i, rows) not in self._left:
            if not self.keep_rows:  # a query block's tiles come one after another
                self._left.clear()
            self._left[i, rows] = _Operand.of(self.metric, self.q[i : i + rows], "left", self.workers)
        if self._right is None or self._right[0] != (j, cols):
            self._right = ((j, cols), _Operand.of(self.metric, self.g[j : j + cols], "right", self.workers))
        return self._left[i, rows], self._right[1]

    def tile(self, i: int, j: int, rows: int, cols: int, row0: int | None = None) -> _ScreenedTile:
        """As :meth:`_ExactTiles.tile`: the bfloat16 screening tile."""
        left, right = self._operands(i, j, rows, cols)
        out = self.buffer[: left.low.shape[0] * right.low.shape[0]].view(left.low.shape[0], right.low.shape[0])
        with torch_threads(self.threads):
            torch.mm(left.low, right.low.t(), out=out)
        return _ScreenedTile(out, i if row0 is None else row0, j, self, left.exact, right.exact,
                             self._margin(left, right))

    @staticmethod
    def _margin(left: _Operand, right: _Operand) -> float:
        """The bound of ``|screened - exact|`` over the pairs of two blocks (see the class docstring);
        ``inf`` where the float32 accumulation could overflow (huge features)."""
        if not left.low_norm * right.low_norm <= 2.0**100:
            return float("inf")
        terms = left.low.shape[1]
        gamma = terms * 2.0**-24 / (1 - terms * 2.0**-24)  # float32 accumulation of `terms` products
        margin = (left.error * right.norm + left.norm * right.error + left.error * right.error
                  + gamma * left.low_norm * right.low_norm
                  + 2.0**-22 * left.norm * right.norm  # float64 evaluation + rounding to the features' dtype
                  + 2.0**-90)  # subnormal inputs a GEMM may flush to zero
        return margin * (1 + 2.0**-20)  # the bound's own float64 rounding

    def rescore(self, left: torch.Tensor, right: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The distances of the pairs ``(left[rows], right[cols])``, ``rows`` sorted, in float64 rounded
        to the features' dtype."""
        if rows.numel() == 0:
            return torch.empty(0, dtype=self.dtype)
        crow = torch.zeros(left.shape[0] + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(rows, minlength=left.shape[0]), 0, out=crow[1:])
        pattern = torch.sparse_csr_tensor(crow, cols, torch.zeros(len(cols), dtype=torch.float64),
                                          (left.shape[0], right.shape[0]), check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, left, right.t(), beta=0.0).values().to(self.dtype)


def nearest_neighbours(
    query: np.ndarray | torch.Tensor,
    gallery: np.ndarray | torch.Tensor | None,
    k: int,
    metric: str | DistanceMetric = "cosine",
    memory_budget_mb: float = 1024,
    exclude_self: bool | None = None,
    num_threads: int | None = None,
    screen: bool | None = None,
) -> Neighbours:
    """The ``k`` nearest gallery items of every query, exact, ties by the smaller gallery index.

    ``gallery=None``: the query set is the gallery and each item is excluded from its own list by
    its index. ``memory_budget_mb`` bounds the live distance tile (the result itself is
    ``num_query x k``). ``num_threads``: selection threads (None: the torch thread setting).
    ``screen``: bfloat16 screening of the tiles (None: when the CPU has bfloat16 matrix instructions).
    """
    m = get_metric(metric) if isinstance(metric, str) else metric
    q = prepare_features(query, m, "query features")
    g = None if gallery is None else prepare_features(gallery, m, "gallery features")
    return search_prepared(q, g, k, m, memory_budget_mb, exclude_self, num_threads, screen)


def search_prepared(q: torch.Tensor, g: torch.Tensor | None, k: int, metric: DistanceMetric,
                    memory_budget_mb: float = 1024, exclude_self: bool | None = None,
                    num_threads: int | None = None, screen: bool | None = None) -> Neighbours:
    """:func:`nearest_neighbours` on features already prepared by ``metric`` (e.g. L2-normalised)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    same = g is None
    if not same and q.shape[1] != g.shape[1]:
        raise ValueError(f"query features are {q.shape[1]}-d but gallery features are {g.shape[1]}-d")
    if not same and q.dtype != g.dtype:
        q, g = q.double(), g.double()
    exclude_self = same if exclude_self is None else exclude_self
    num_gallery = q.shape[0] if same else g.shape[0]
    if exclude_self and q.shape[0] > num_gallery:
        raise ValueError(f"exclude_self needs the queries to be the first gallery items, got {q.shape[0]} queries "
                         f"and {num_gallery} gallery items")
    symmetric = same and q.shape[0] * k * _STATE_BYTES_PER_NEIGHBOUR <= memory_budget_mb * 2**20
    gemm_threads = torch.get_num_threads()  # the caller's setting, for the GEMMs only
    workers = _Workers(num_threads or gemm_threads)
    try:
        with torch_threads(1):  # each selection task on one torch thread
            gallery = q if same else g
            tiles = _Screen.create(metric, q, gallery, k, screen, workers, keep_rows=symmetric) or \
                _ExactTiles(metric, q, gallery)
            tile = _tile_size(max(q.shape[0], num_gallery), memory_budget_mb, tiles.element_size, workers.count,
                              tiles.max_tile)
            tiles.allocate(tile, gemm_threads)
            if symmetric:
                return _symmetric_search(tiles, q.shape[0], k, q.dtype, tile, workers)
            return _one_sided_search(tiles, q.shape[0], num_gallery, k, q.dtype, tile, exclude_self,
                                     memory_budget_mb, workers)
    finally:
        workers.close()


class _ExactTiles:
    """Tiles of exact distances: the metric's GEMM in the features' dtype."""

    def __init__(self, metric: DistanceMetric, q: torch.Tensor, g: torch.Tensor) -> None:
        self.metric, self.q, self.g = metric, q, g
        self.element_size, self.max_tile = q.element_size(), MAX_TILE

    def allocate(self, tile: int, threads: int) -> None:
        """One reused output buffer (fresh pages for every tile would be zeroed first); GEMMs on ``threads``."""
        self.buffer, self.threads = torch.empty(tile * tile, dtype=self.q.dtype), threads

    def tile(self, i: int, j: int, rows: int, cols: int, row0: int | None = None) -> _Tile:
        """Queries ``i..i+rows`` x gallery items ``j..j+cols`` (state rows from ``row0``, default ``i``)."""
        x, y = self.q[i : i + rows], self.g[j : j + cols]
        out = self.buffer[: x.shape[0] * y.shape[0]].view(x.shape[0], y.shape[0])
        with torch_threads(self.threads):
            return _Tile(self.metric.pairwise(x, y, out=out), i if row0 is None else row0, j)


def _symmetric_search(tiles: _ExactTiles | _Screen, n: int, k: int, dtype: torch.dtype, tile: int,
                      workers: _Workers) -> Neighbours:
    """Every pair ``i < j`` computed once in an upper-triangle tile and offered to both rows.

    Tiles go column block by column block, the diagonal tile first, so that a row block meets its
    first distances as rows of a diagonal tile (cheap thresholds; no gather of block columns).
    """
    state = _RunningTopK(n, k, n, dtype)
    selection = _Selection(state, tile, workers, mirrored=True)
    upper = torch.ones(tile, tile, dtype=torch.bool).triu_(1)
    for j in range(0, n, tile):
        for i in [j, *range(0, j, tile)]:
            block = tiles.tile(i, j, tile, tile)
            shape = block.block.shape
            selection.offer(block, upper[: shape[0], : shape[1]] if i == j else None)
    return state.result()


def _one_sided_search(tiles: _ExactTiles | _Screen, nq: int, ng: int, k: int, dtype: torch.dtype, tile: int,
                      exclude_self: bool, memory_budget_mb: float, workers: _Workers) -> Neighbours:
    """Query chunks swept over gallery tiles; the running lists of one chunk at a time."""
    chunk = max(tile, min(nq, rows_per_chunk(k, _STATE_BYTES_PER_NEIGHBOUR, memory_budget_mb / 2)))
    distances, indices = [], []
    for c0 in range(0, nq, chunk):
        rows = min(chunk, nq - c0)
        state = _RunningTopK(rows, k, ng, dtype)
        selection = _Selection(state, tile, workers, mirrored=False)
        for i in range(0, rows, tile):
            for j in range(0, ng, tile):
                block = tiles.tile(c0 + i, j, min(tile, rows - i), tile, row0=i)  # state rows of this chunk
                height, width = block.block.shape
                valid = None
                if exclude_self and j < c0 + i + height and c0 + i < j + width:
                    valid = torch.arange(c0 + i, c0 + i + height)[:, None] != torch.arange(j, j + width)[None, :]
                selection.offer(block, valid)
        res = state.result()
        distances.append(res.distances)
        indices.append(res.indices)
    if not distances:  # no query
        return Neighbours(torch.empty(0, k, dtype=dtype), torch.empty(0, k, dtype=torch.int64))
    return Neighbours(torch.cat(distances), torch.cat(indices))


def without_own_index(distances: torch.Tensor, indices: torch.Tensor, own: torch.Tensor) -> Neighbours:
    """Lists of ``k + 1`` without each query's own index ``own`` (or without the last entry when
    the query is not in its list: ``k + 1`` items at least as near came first)."""
    is_self = indices == own[:, None]
    is_self[~is_self.any(dim=1), -1] = True
    keep = ~is_self
    n, width = indices.shape
    return Neighbours(distances[keep].view(n, width - 1), indices[keep].view(n, width - 1))
