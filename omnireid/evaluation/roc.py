"""Verification ROC over query-gallery pairs: TPR at fixed FPR, streamed over distance blocks.

Pairs (as FastReID's ``evaluate_roc``): every query against every gallery item except junk (same
pid and same camera). Positives are same-pid pairs (other camera), negatives are different-pid
pairs. Queries without a true match still contribute their negatives.

A pair is *accepted* when its distance is below a threshold. ``TPR@FPR=f`` is the largest fraction
of accepted positives over all thresholds accepting at most ``floor(f * #negatives)`` negatives,
i.e. with ``n_(m+1)`` the ``(m+1)``-th smallest negative distance, ``m = floor(f * #negatives)``:
``TPR = #{positive d < n_(m+1)} / #positives`` (1 when ``m >= #negatives``).

Unlike FastReID's evaluator, which hands ``labels = 1 for negatives`` and raw distances to
``sklearn.metrics.roc_curve`` (so its "TPR" is a rejection rate of impostor pairs) and picks the
nearest FPR on the curve, this is the usual verification convention with an exact threshold.

Only the smallest ``floor(max_f * #negatives) + 1`` negative distances and the positive distances
are kept, so memory is bounded by the number of true pairs plus 1% of the negatives.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .rank import MatchTable

ROC_FPRS: tuple[float, ...] = (1e-4, 1e-3, 1e-2)


def roc_key(fpr: float) -> str:
    return f"TPR@FPR={fpr:g}"


def allowed_negatives(fpr: float, num_negatives: int) -> int:
    """``floor(fpr * num_negatives)`` robust to float noise (1e-3 * 1000 must give 1, not 0)."""
    return int(math.floor(fpr * num_negatives + 1e-9))


class RocAccumulator:
    """Keeps positive distances and the smallest negative distances seen so far."""

    def __init__(self, table: "MatchTable", fprs: tuple[float, ...] = ROC_FPRS) -> None:
        if not fprs or any(not (0 < f < 1) for f in fprs):
            raise ValueError(f"ROC false-positive rates must be in (0, 1), got {fprs}")
        self.table = table
        self.fprs = tuple(fprs)
        num_gallery = len(table.g_pids)
        self.num_negatives = int((num_gallery - table.num_same_pid).sum())
        self.keep = allowed_negatives(max(self.fprs), self.num_negatives) + 1
        self._positives: list[torch.Tensor] = []
        self._pending: list[torch.Tensor] = []
        self._pending_count = 0
        self._threshold = float("inf")
        self._q_pids = torch.from_numpy(table.q_pids)
        self._g_pids = torch.from_numpy(table.g_pids)

    def add_block(self, start: int, block: torch.Tensor, pos_d: torch.Tensor) -> None:
        """Walk the block in small row groups so the running threshold (the ``keep``-th smallest
        negative so far) tightens early and little is extracted: about ``keep * ln(#pairs / keep)``
        values over the whole evaluation instead of every negative."""
        self._positives.append(pos_d.double())
        step = max(1, (1 << 21) // max(1, block.shape[1]))
        for s in range(0, block.shape[0], step):
            sub = block[s : s + step]
            if math.isfinite(self._threshold):
                flat = torch.from_numpy(np.flatnonzero(sub.numpy() <= self._threshold))
            else:
                flat = torch.arange(sub.numel())
            rows = torch.div(flat, sub.shape[1], rounding_mode="floor")
            cols = flat - rows * sub.shape[1]
            negative = self._g_pids[cols] != self._q_pids[start + s + rows]
            values = sub.reshape(-1)[flat[negative]]
            self._pending.append(values)
            self._pending_count += values.numel()
            if self._pending_count > 2 * self.keep:
                self._prune()

    def _prune(self) -> None:
        if not self._pending:
            return
        values = torch.cat(self._pending)
        if values.numel() > self.keep:
            kth = torch.kthvalue(values, self.keep).values
            values = values[values <= kth]  # ties at the k-th value may keep a few more: harmless
            self._threshold = float(kth)
        self._pending = [values]
        self._pending_count = values.numel()

    def result(self) -> dict[str, float]:
        positives = torch.cat(self._positives) if self._positives else torch.zeros(0, dtype=torch.float64)
        self._prune()
        negatives = torch.sort(self._pending[0]).values if self._pending else torch.zeros(0)
        out: dict[str, float] = {}
        for fpr in self.fprs:
            m = allowed_negatives(fpr, self.num_negatives)
            if positives.numel() == 0:
                tpr = float("nan")
            elif m >= self.num_negatives:
                tpr = 1.0
            else:
                tpr = float((positives < negatives[m]).double().mean())
            out[roc_key(fpr)] = tpr
        return out


def roc_curve(positives: np.ndarray | torch.Tensor, negatives: np.ndarray | torch.Tensor,
              max_points: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole ROC curve with the convention of :class:`RocAccumulator`: ``(fpr, tpr, thresholds)``.

    Point ``m`` (0..#negatives) accepts the ``m`` smallest negative distances: the threshold is the
    ``(m+1)``-th smallest negative ``n_(m+1)`` (``inf`` for the last point), ``FPR = m / #negatives``
    and ``TPR = #{positive d < threshold} / #positives``; so the point at ``m = floor(f * #negatives)``
    is exactly ``TPR@FPR=f``. ``max_points`` keeps that many points evenly spread in ``m`` (the first
    and last included), for plotting.
    """
    pos = np.sort(np.asarray(positives, dtype=np.float64).reshape(-1))
    neg = np.sort(np.asarray(negatives, dtype=np.float64).reshape(-1))
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"a ROC curve needs positive and negative pairs, got {pos.size} and {neg.size}")
    m = np.arange(neg.size + 1)
    if max_points is not None and max_points < m.size:
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {max_points}")
        m = np.unique(np.linspace(0, neg.size, max_points).round().astype(np.int64))
    thresholds = np.append(neg, np.inf)[m]
    tpr = np.searchsorted(pos, thresholds, side="left") / pos.size
    return m / neg.size, tpr, thresholds


def pair_distances(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, metric: str = "cosine",
                   max_negatives: int | None = None, memory_budget_mb: float = 512,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """The pairs behind the ROC: distances of every positive pair (same pid, other camera) and of
    the negative pairs (different pid), uniformly sampled down to about ``max_negatives`` (None:
    all); junk pairs are in neither. Returns ``(positives, negatives, number of negative pairs)``.
    With every negative kept, :func:`roc_curve` on them gives the exact ``TPR@FPR`` values."""
    from .distance import prepare_pair
    from .rank import MatchTable, as_id_array, rows_per_chunk

    q_pids, g_pids = as_id_array(q_pids, "q_pids"), as_id_array(g_pids, "g_pids")
    q_camids, g_camids = as_id_array(q_camids, "q_camids"), as_id_array(g_camids, "g_camids")
    q, g, m = prepare_pair(q_feats, g_feats, metric)
    table = MatchTable(q_pids, g_pids, q_camids, g_camids)
    total_neg = int((len(g_pids) - table.num_same_pid).sum())
    keep = 1.0 if max_negatives is None else min(1.0, max_negatives / max(1, total_neg))
    rng = np.random.default_rng(seed)
    rows = rows_per_chunk(len(g_pids), 2 * q.element_size() + 2, memory_budget_mb)
    positives, negatives = [], []
    for start in range(0, len(q_pids), rows):
        end = min(start + rows, len(q_pids))
        block = m.pairwise(q[start:end], g).double().numpy()
        pos_rows, pos_cols, _, _ = table.split(start, end)
        positives.append(block[pos_rows, pos_cols])
        neg = block[q_pids[start:end, None] != g_pids[None, :]]
        if keep < 1:
            neg = neg[rng.random(neg.size) < keep]
        negatives.append(neg)
    return np.concatenate(positives), np.concatenate(negatives), total_neg
