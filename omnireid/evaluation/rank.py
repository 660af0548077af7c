"""Exact CMC / mAP / mINP (Market-1501 protocol) without sorting the gallery per query.

Definition (FastReID / torchreid ``eval_market1501``): for each query, gallery items with the same
pid *and* the same camera are junk and removed; the remaining ("valid") items are ordered by
distance, **ties broken by gallery index** (what a stable argsort gives); true matches are valid items
with the query's pid. With the 0-based positions ``r_1 < ... < r_m`` of the ``m`` true matches:

- ``AP = (1/m) * sum_j j / (r_j + 1)``, ``INP = m / (r_m + 1)``;
- ``CMC[k] = 1`` if ``r_1 <= k``; the curve is averaged (float32, as FastReID) over valid queries;
- queries with no true match are skipped; ``max_rank`` is clipped to the gallery size.

How: the position of a true match only depends on how many valid items come before it. Per query,
the items that can come before *some* true match are those with distance ``<=`` the largest
true-match distance. When few items qualify (a useful model), they are extracted, ordered by
``(query, distance, gallery index)`` and counted; when many qualify, each item's bucket between
consecutive true-match distances is found with a binary search and the buckets are counted. Both
give the same integer positions, so the metrics do not depend on the path, the chunk size or the
number of threads. The distances are processed in query chunks bounded by ``memory_budget_mb``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from .distance import as_float_tensor, torch_threads
from .roc import RocAccumulator

logger = logging.getLogger(__name__)

# Above this fraction of candidate items in a chunk, bucketing by binary search beats extraction.
_DENSE_FRACTION = 0.25
# Working bytes per query x gallery element on top of the distance block (masks, int32 buckets).
WORK_BYTES_PER_ELEMENT = 14


def as_id_array(values: np.ndarray | torch.Tensor | list, what: str) -> np.ndarray:
    """A 1-D int64 numpy array of ids (pids or camids)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def rows_per_chunk(num_columns: int, bytes_per_element: int, memory_budget_mb: float) -> int:
    """How many query rows of ``num_columns`` elements fit in the budget (at least one)."""
    if memory_budget_mb <= 0:
        raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
    budget = memory_budget_mb * 2**20
    return max(1, int(budget // max(1, num_columns * bytes_per_element)))


class MatchTable:
    """For every query, its same-pid gallery columns split into true matches and junk."""

    def __init__(self, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray):
        self.q_pids, self.g_pids, self.q_camids, self.g_camids = q_pids, g_pids, q_camids, g_camids
        self._g_order = np.argsort(g_pids, kind="stable")  # same-pid columns come out in index order
        sorted_pids = g_pids[self._g_order]
        self._lo = np.searchsorted(sorted_pids, q_pids, side="left")
        self._count = np.searchsorted(sorted_pids, q_pids, side="right") - self._lo
        rows, cols = self.same_pid(0, len(q_pids))
        is_pos = g_camids[cols] != q_camids[rows]
        self.num_pos = np.bincount(rows[is_pos], minlength=len(q_pids)).astype(np.int64)
        self.num_same_pid = self._count.astype(np.int64)

    def same_pid(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """(row - start, column) of every same-pid gallery item of queries ``start..end-1``;
        rows ascending, columns ascending within a row."""
        count = self._count[start:end]
        total = int(count.sum())
        rows = np.repeat(np.arange(end - start, dtype=np.int64), count)
        first = np.cumsum(count) - count
        offsets = np.arange(total, dtype=np.int64) - np.repeat(first, count) + np.repeat(self._lo[start:end], count)
        return rows, self._g_order[offsets].astype(np.int64)

    def split(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(pos_rows, pos_cols, junk_rows, junk_cols) for queries ``start..end-1`` (local rows)."""
        rows, cols = self.same_pid(start, end)
        is_pos = self.g_camids[cols] != self.q_camids[start + rows]
        return rows[is_pos], cols[is_pos], rows[~is_pos], cols[~is_pos]


@dataclass
class RankMetrics:
    """Per-query results of one evaluation; ``valid`` marks queries with at least one true match."""

    cmc: np.ndarray
    all_AP: np.ndarray
    all_INP: np.ndarray
    valid: np.ndarray
    roc: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Rank-1/5/10, mAP, mINP in percent (plus ROC entries), as the evaluator reports them."""
        out: dict[str, float] = {}
        for k in (1, 5, 10):
            out[f"Rank-{k}"] = float(self.cmc[min(k, len(self.cmc)) - 1]) * 100
        out["mAP"] = float(np.mean(self.all_AP)) * 100
        out["mINP"] = float(np.mean(self.all_INP)) * 100
        for key, value in self.roc.items():
            out[key] = value * 100
        return out


class RankAccumulator:
    """Consumes query-row blocks of the distance matrix (any chunking) and yields exact metrics."""

    def __init__(
        self,
        q_pids: np.ndarray | torch.Tensor,
        g_pids: np.ndarray | torch.Tensor,
        q_camids: np.ndarray | torch.Tensor,
        g_camids: np.ndarray | torch.Tensor,
        max_rank: int = 50,
        roc: bool = False,
        num_threads: int | None = None,
    ) -> None:
        self.num_threads = num_threads
        q_pids, g_pids = as_id_array(q_pids, "q_pids"), as_id_array(g_pids, "g_pids")
        q_camids, g_camids = as_id_array(q_camids, "q_camids"), as_id_array(g_camids, "g_camids")
        if len(q_pids) != len(q_camids):
            raise ValueError(f"q_pids has {len(q_pids)} entries but q_camids has {len(q_camids)}")
        if len(g_pids) != len(g_camids):
            raise ValueError(f"g_pids has {len(g_pids)} entries but g_camids has {len(g_camids)}")
        if len(g_pids) == 0:
            raise ValueError("the gallery is empty")
        if max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
        self.num_query, self.num_gallery = len(q_pids), len(g_pids)
        if max_rank > self.num_gallery:
            logger.warning("max_rank %d is larger than the gallery (%d); using %d", max_rank, self.num_gallery, self.num_gallery)
            max_rank = self.num_gallery
        self.max_rank = max_rank
        self.table = MatchTable(q_pids, g_pids, q_camids, g_camids)
        self._q_pids_t = torch.from_numpy(q_pids)
        self._g_pids_t = torch.from_numpy(g_pids)
        self._q_cams_t = torch.from_numpy(q_camids)
        self._g_cams_t = torch.from_numpy(g_camids)
        self._ap = np.full(self.num_query, np.nan)
        self._inp = np.full(self.num_query, np.nan)
        self._first = np.full(self.num_query, -1, dtype=np.int64)
        self._done = np.zeros(self.num_query, dtype=bool)
        self.roc = RocAccumulator(self.table) if roc else None

    # ------------------------------------------------------------------ blocks
    def add_block(self, start: int, block: torch.Tensor, force_path: str | None = None) -> None:
        """Distances of queries ``start .. start+len(block)-1`` to the whole gallery."""
        with torch_threads(self.num_threads):
            self._add_block(start, block, force_path)

    def _add_block(self, start: int, block: torch.Tensor, force_path: str | None) -> None:
        if block.dim() != 2 or block.shape[1] != self.num_gallery:
            raise ValueError(f"distance block must be (rows, {self.num_gallery}), got {tuple(block.shape)}")
        end = start + block.shape[0]
        if start < 0 or end > self.num_query or self._done[start:end].any():
            raise ValueError(f"query rows {start}..{end - 1} are out of range or were already added")
        self._done[start:end] = True
        pos_rows, pos_cols, junk_rows, junk_cols = (torch.from_numpy(a) for a in self.table.split(start, end))
        pos_d = block[pos_rows, pos_cols]
        if self.roc is not None:
            self.roc.add_block(start, block, pos_d)
        if pos_rows.numel() == 0:
            return
        rows_count = block.shape[0]
        npos = torch.bincount(pos_rows, minlength=rows_count)
        threshold = torch.full((rows_count,), -float("inf"), dtype=block.dtype)
        threshold.scatter_reduce_(0, pos_rows, pos_d, reduce="amax")
        # candidates: items that may precede a true match; labelled in place in the (fresh) mask:
        # 1 = valid non-match, 2 = true match (always a candidate), 3 = junk candidate
        # (numpy's SIMD comparison is ~4x faster than torch's broadcast one on CPU)
        label = torch.from_numpy(np.less_equal(block.numpy(), threshold.numpy()[:, None])).view(torch.uint8)
        label[pos_rows, pos_cols] = 2
        label[junk_rows, junk_cols] *= 3
        # numpy's flatnonzero is several times faster than torch.nonzero on CPU
        flat = torch.from_numpy(np.flatnonzero(label.numpy()))
        dense = flat.numel() > _DENSE_FRACTION * block.numel()
        if force_path is not None:
            dense = force_path == "dense"
        if dense:
            del flat, label
            rows, ranks = self._ranks_by_buckets(block, pos_rows, pos_cols, pos_d, npos, junk_rows, junk_cols)
        elif force_path != "extract_sort" and _fits_key(block):
            rows, ranks = self._ranks_by_search(block, flat, label.view(-1)[flat], pos_rows, pos_cols, pos_d, npos)
        else:
            rows, ranks = self._ranks_by_extraction(block, flat, label.view(-1)[flat])
        self._store(start, rows.numpy(), ranks.numpy(), npos.numpy())

    @staticmethod
    def _ranks_by_search(block, flat, labels, pos_rows, pos_cols, pos_d, npos):
        """Each valid non-match candidate's bucket among its query's true matches, by one binary
        search of a unique (row, distance, column) key in the sorted keys of all true matches."""
        rows_count, num_cols = block.shape
        kmax = int(npos.max())
        cand = flat[torch.from_numpy(np.flatnonzero((labels == 1).numpy()))]
        rows = torch.div(cand, num_cols, rounding_mode="floor")
        cand_keys = _row_value_column_key(rows, block.reshape(-1)[cand], cand - rows * num_cols, rows_count, num_cols)
        pos_keys = torch.sort(_row_value_column_key(pos_rows, pos_d, pos_cols, rows_count, num_cols)).values
        row_first = torch.cumsum(npos, 0) - npos  # positives are grouped by row, rows ascending
        bucket = torch.searchsorted(pos_keys, cand_keys) - row_first[rows]
        hist = torch.bincount(rows * (kmax + 1) + bucket, minlength=rows_count * (kmax + 1))
        hist = hist.view(rows_count, kmax + 1)[:, :kmax]
        ranks = torch.arange(kmax)[None, :] + torch.cumsum(hist, dim=1)
        keep = torch.arange(kmax)[None, :] < npos[:, None]
        all_rows = torch.arange(rows_count)[:, None].expand(rows_count, kmax)
        return all_rows[keep], ranks[keep]

    @staticmethod
    def _ranks_by_extraction(block: torch.Tensor, flat: torch.Tensor, labels: torch.Tensor):
        values = block.reshape(-1)[flat]
        rows = torch.div(flat, block.shape[1], rounding_mode="floor")
        order, rows = order_by_row_then_value(rows, values, return_rows=True)  # ties keep column order
        labels = labels[order]
        valid = labels != 3
        is_pos = labels == 2
        before = torch.cumsum(valid, 0) - valid.long()  # valid items before each element (whole list)
        counts = torch.bincount(rows, minlength=block.shape[0])
        row_first = torch.cumsum(counts, 0) - counts
        base = before[row_first.clamp(max=max(len(before) - 1, 0))]
        ranks = before - base[rows]
        return rows[is_pos], ranks[is_pos]

    def _ranks_by_buckets(self, block, pos_rows, pos_cols, pos_d, npos, junk_rows, junk_cols):
        rows_count, num_cols = block.shape
        kmax = int(npos.max())
        row_first = torch.cumsum(npos, 0) - npos
        slot = torch.arange(len(pos_rows)) - row_first[pos_rows]
        pos_dist = torch.full((rows_count, kmax), float("inf"), dtype=block.dtype)
        pos_col = torch.full((rows_count, kmax), num_cols, dtype=torch.int64)
        pos_dist[pos_rows, slot] = pos_d
        pos_col[pos_rows, slot] = pos_cols
        pos_dist, perm = torch.sort(pos_dist, dim=1, stable=True)  # ties keep column order
        pos_col = torch.gather(pos_col, 1, perm)
        # bucket = number of true matches ordered before the element by (distance, column)
        bucket = torch.searchsorted(pos_dist, block, out_int32=True)
        upper = torch.searchsorted(pos_dist, block, right=True, out_int32=True)
        tie = torch.from_numpy(np.flatnonzero((upper != bucket).numpy()))
        if tie.numel():
            t_rows = torch.div(tie, num_cols, rounding_mode="floor")
            t_cols = tie - t_rows * num_cols
            lo = bucket.view(-1)[tie].long()[:, None]
            hi = upper.view(-1)[tie].long()[:, None]
            k = torch.arange(kmax)[None, :]
            earlier = (k >= lo) & (k < hi) & (pos_col[t_rows] < t_cols[:, None])
            bucket.view(-1)[tie] = (lo.squeeze(1) + earlier.sum(1)).to(torch.int32)
        dump = kmax + 1
        bucket[pos_rows, pos_cols] = dump
        bucket[junk_rows, junk_cols] = dump
        offsets = (torch.arange(rows_count, dtype=torch.int32) * (kmax + 2))[:, None]
        hist = torch.bincount((bucket + offsets).view(-1), minlength=rows_count * (kmax + 2))
        hist = hist.view(rows_count, kmax + 2)[:, :kmax]
        ranks = torch.arange(kmax)[None, :] + torch.cumsum(hist, dim=1)
        keep = torch.arange(kmax)[None, :] < npos[:, None]
        rows = torch.arange(rows_count)[:, None].expand(rows_count, kmax)
        return rows[keep], ranks[keep]

    def _store(self, start: int, rows: np.ndarray, ranks: np.ndarray, npos: np.ndarray) -> None:
        """Per-query AP / INP / first-match rank from the sorted true-match positions."""
        present = np.flatnonzero(npos)
        seg_start = np.cumsum(npos) - npos
        seg_start = seg_start[present]
        m = npos[present]
        ordinal = np.arange(len(rows)) - np.repeat(seg_start, m) + 1
        contrib = ordinal / (ranks + 1.0)
        ap = np.add.reduceat(contrib, seg_start) / m
        last = ranks[seg_start + m - 1]
        q = start + present
        self._ap[q] = ap
        self._inp[q] = m / (last + 1.0)
        self._first[q] = ranks[seg_start]

    # ------------------------------------------------------------------ results
    def result(self) -> RankMetrics:
        if not self._done.all():
            missing = int((~self._done).sum())
            raise RuntimeError(f"{missing} query rows were never added")
        valid = self.table.num_pos > 0
        num_valid = int(valid.sum())
        if num_valid == 0:
            raise ValueError("no query has a true match in the gallery (all query identities are absent or junk)")
        first = self._first[valid]
        hits = np.bincount(np.minimum(first, self.max_rank), minlength=self.max_rank + 1)[: self.max_rank]
        cmc = np.cumsum(hits).astype(np.float32) / np.float32(num_valid)
        roc = self.roc.result() if self.roc is not None else {}
        return RankMetrics(cmc=cmc, all_AP=self._ap[valid], all_INP=self._inp[valid], valid=valid, roc=roc)


def _ordered_bits(values: torch.Tensor) -> torch.Tensor:
    """An order-preserving map of float32 values to int64 in [0, 2**32); equal floats map equal."""
    bits = (values + 0.0).view(torch.int32).long()  # + 0.0 turns -0.0 into +0.0 (they compare equal)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2**31


def _key_bits(rows_count: int, num_cols: int) -> tuple[int, int]:
    return max(1, (rows_count - 1).bit_length()), max(1, (num_cols - 1).bit_length())


def _fits_key(block: torch.Tensor) -> bool:
    row_bits, col_bits = _key_bits(*block.shape)
    return block.dtype == torch.float32 and row_bits + 32 + col_bits <= 63


def _row_value_column_key(rows, values, cols, rows_count: int, num_cols: int) -> torch.Tensor:
    """Unique int64 keys ordered like (row, distance, column)."""
    _, col_bits = _key_bits(rows_count, num_cols)
    return (rows << (32 + col_bits)) | (_ordered_bits(values) << col_bits) | cols


def order_by_row_then_value(rows: torch.Tensor, values: torch.Tensor, return_rows: bool = False):
    """Stable permutation sorting by (row, value): equal pairs keep their input order. ``rows`` must
    be non-negative and below 2**31. With ``return_rows``, also the rows in that order."""
    if values.dtype == torch.float32:
        # one int64 sort: row in the high word, an order-preserving image of the float in the low word
        keys, order = torch.sort((rows << 32) | _ordered_bits(values), stable=True)
        return (order, keys >> 32) if return_rows else order
    by_value = torch.sort(values, stable=True).indices
    by_row = torch.sort(rows[by_value], stable=True).indices
    order = by_value[by_row]
    return (order, rows[order]) if return_rows else order


def iter_row_blocks(distmat: torch.Tensor, memory_budget_mb: float):
    rows = rows_per_chunk(distmat.shape[1], distmat.element_size() + WORK_BYTES_PER_ELEMENT, memory_budget_mb)
    for start in range(0, distmat.shape[0], rows):
        yield start, distmat[start : start + rows]


def _distance_tensor(distmat: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(distmat, np.ndarray) and not distmat.flags.c_contiguous:
        distmat = np.ascontiguousarray(distmat)
    dist = as_float_tensor(distmat, "distmat").contiguous()
    if dist.dim() != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {tuple(dist.shape)}")
    return dist


def _check_shape(dist: torch.Tensor, q_pids, g_pids) -> None:
    if dist.shape != (len(q_pids), len(g_pids)):
        raise ValueError(
            f"distmat has shape {tuple(dist.shape)} but there are {len(q_pids)} queries and {len(g_pids)} gallery items"
        )


def evaluate_rank_metrics(
    distmat: np.ndarray | torch.Tensor,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    roc: bool = False,
    memory_budget_mb: float = 1024,
    num_threads: int | None = 1,
) -> RankMetrics:
    """:func:`evaluate_rank` returning a :class:`RankMetrics` (and ROC when ``roc``)."""
    dist = _distance_tensor(distmat)
    acc = RankAccumulator(q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, roc=roc, num_threads=num_threads)
    _check_shape(dist, acc.table.q_pids, acc.table.g_pids)
    for start, block in iter_row_blocks(dist, memory_budget_mb):
        acc.add_block(start, block)
    return acc.result()


def evaluate_rank(
    distmat: np.ndarray | torch.Tensor,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    memory_budget_mb: float = 1024,
    num_threads: int | None = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cmc[max_rank], all_AP, all_INP)`` with the Market-1501 protocol, as FastReID returns them
    (per valid query, in query order); see the module docstring for the exact definition.
    ``num_threads``: torch threads for the ranking kernel (None: the current torch setting; one by
    default, see :mod:`omnireid.evaluation.distance`)."""
    res = evaluate_rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, False, memory_budget_mb,
                                num_threads)
    return res.cmc, res.all_AP, res.all_INP


def evaluate_rank_cuhk03(
    distmat: np.ndarray | torch.Tensor,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    num_repeats: int = 10,
    seed: int = 0,
    memory_budget_mb: float = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """CUHK03 single-gallery-shot protocol: ``(cmc[max_rank], all_AP)``.

    Junk (same pid and camera) is removed as in Market-1501. For the CMC, each of ``num_repeats``
    rounds keeps one uniformly drawn valid gallery image per identity (numpy ``default_rng(seed)``);
    with a single true match left, its position is the number of kept images of other identities
    ordered before it by (distance, gallery index). The CMC is averaged over rounds then over valid
    queries. AP uses the full (multi-shot) valid gallery, as torchreid/FastReID ``eval_cuhk03``.
    """
    if num_repeats < 1:
        raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
    dist = _distance_tensor(distmat)
    acc = RankAccumulator(q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    table = acc.table
    _check_shape(dist, table.q_pids, table.g_pids)
    max_rank = acc.max_rank
    rng = np.random.default_rng(seed)
    g_pids_np = table.g_pids
    uniq, inverse = np.unique(g_pids_np, return_inverse=True)
    members = np.argsort(inverse, kind="stable")
    group_start = np.searchsorted(inverse[members], np.arange(len(uniq)))
    group_size = np.bincount(inverse, minlength=len(uniq))
    # one representative per identity and round (other identities never lose items to junk)
    picks = group_start[None, :] + (rng.random((num_repeats, len(uniq))) * group_size[None, :]).astype(np.int64)
    reps = members[np.minimum(picks, group_start + group_size - 1)]  # (repeats, identities)
    valid = table.num_pos > 0
    pos_pick = rng.random((num_repeats, table.q_pids.shape[0]))
    cmc_sum = np.zeros(max_rank, dtype=np.float64)
    q_ident = np.searchsorted(uniq, table.q_pids)
    for start, block in iter_row_blocks(dist, memory_budget_mb):
        end = start + block.shape[0]
        acc.add_block(start, block)
        pos_rows, pos_cols, _, _ = table.split(start, end)
        npos = np.bincount(pos_rows, minlength=end - start)
        first = np.cumsum(npos) - npos
        for r in range(num_repeats):
            rows = np.flatnonzero(npos)
            chosen = pos_cols[first[rows] + (pos_pick[r, start + rows] * npos[rows]).astype(np.int64)]
            rep_cols = torch.from_numpy(reps[r])
            rep_d = block[torch.from_numpy(rows)][:, rep_cols]  # (rows, identities)
            pos_d = block[torch.from_numpy(rows), torch.from_numpy(chosen)][:, None]
            before = (rep_d < pos_d) | ((rep_d == pos_d) & (rep_cols[None, :] < torch.from_numpy(chosen)[:, None]))
            own = torch.from_numpy(q_ident[start + rows])[:, None] == torch.arange(len(uniq))[None, :]
            rank = (before & ~own).sum(1).numpy()
            hit = np.zeros((len(rows), max_rank))
            hit[:, :] = np.arange(max_rank)[None, :] >= rank[:, None]
            cmc_sum += hit.sum(0)
    num_valid = int(valid.sum())
    res = acc.result()
    cmc = (cmc_sum / (num_repeats * num_valid)).astype(np.float32)
    return cmc, res.all_AP
