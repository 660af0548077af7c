"""Independent plain-loop references for the evaluation tests, checked on hand-computed cases.

These follow the textbook per-query definitions (stable argsort, remove junk, walk the list) and
share no code with omnireid.evaluation.
"""
from __future__ import annotations

import numpy as np
import pytest


def brute_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Per-query stable argsort (FastReID / torchreid eval_market1501 definition)."""
    distmat = np.asarray(distmat, dtype=np.float64)
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(num_q):
        order = np.argsort(distmat[q], kind="stable")
        keep = ~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
        raw = (g_pids[order][keep] == q_pids[q]).astype(np.int64)
        if not raw.any():
            continue
        cmc = raw.cumsum()
        cmc[cmc > 1] = 1
        padded = np.ones(max_rank, dtype=np.int64)  # past the list end the first match stays found
        padded[: min(max_rank, len(cmc))] = cmc[:max_rank]
        all_cmc.append(padded)
        hits = 0
        precision_sum = 0.0
        last = 0
        for pos, is_match in enumerate(raw):
            if is_match:
                hits += 1
                precision_sum += hits / (pos + 1.0)
                last = pos
        all_ap.append(precision_sum / hits)
        all_inp.append(hits / (last + 1.0))
    if not all_cmc:
        raise ValueError("no valid query")
    cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / np.float32(len(all_cmc))
    return cmc, np.asarray(all_ap), np.asarray(all_inp)


def brute_roc(distmat, q_pids, g_pids, q_camids, g_camids, fprs):
    """Scan every threshold: best TPR with FPR <= f, accepting pairs with distance <= threshold."""
    distmat = np.asarray(distmat, dtype=np.float64)
    pos, neg = [], []
    for q in range(distmat.shape[0]):
        for g in range(distmat.shape[1]):
            if g_pids[g] == q_pids[q]:
                if g_camids[g] != q_camids[q]:
                    pos.append(distmat[q, g])
            else:
                neg.append(distmat[q, g])
    pos, neg = np.asarray(pos), np.asarray(neg)
    out = {}
    for f in fprs:
        best = 0.0
        for t in np.concatenate([[-np.inf], np.unique(np.concatenate([pos, neg]))]):
            num_fp = int((neg <= t).sum())
            if num_fp <= f * len(neg) + 1e-9:
                best = max(best, float((pos <= t).mean()))
        out[f] = best
    return out


def test_hand_computed_single_query():
    # gallery order by distance: g0 (match, other cam), g1 (junk: same pid+cam), g2 (other), g3 (match)
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    q_pids, q_cams = np.array([1]), np.array([0])
    g_pids, g_cams = np.array([1, 1, 2, 1]), np.array([1, 0, 1, 2])
    cmc, ap, inp = brute_rank(dist, q_pids, g_pids, q_cams, g_cams, 3)
    # valid list: g0 (hit), g2 (miss), g3 (hit) -> AP = (1/1 + 2/3) / 2, INP = 2/3
    assert np.allclose(cmc, [1, 1, 1])
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert inp[0] == pytest.approx(2 / 3)


def test_hand_computed_ties_and_skip():
    # ties at 0.5: the stable order puts g0 (miss) before g1 (hit); query 1 has only junk -> skipped
    dist = np.array([[0.5, 0.5, 0.9], [0.1, 0.2, 0.3]])
    q_pids, q_cams = np.array([7, 8]), np.array([0, 0])
    g_pids, g_cams = np.array([3, 7, 8]), np.array([1, 1, 0])
    cmc, ap, inp = brute_rank(dist, q_pids, g_pids, q_cams, g_cams, 3)
    assert len(ap) == 1
    assert np.allclose(cmc, [0, 1, 1])
    assert ap[0] == pytest.approx(0.5) and inp[0] == pytest.approx(0.5)


def test_hand_computed_roc():
    # positives: 0.1, 0.4; negatives: 0.2, 0.3, 0.5, 0.6 (junk 0.05 ignored)
    dist = np.array([[0.1, 0.4, 0.2, 0.3, 0.5, 0.6, 0.05]])
    q_pids, q_cams = np.array([1]), np.array([0])
    g_pids = np.array([1, 1, 2, 3, 4, 5, 1])
    g_cams = np.array([1, 2, 1, 1, 1, 1, 0])
    out = brute_roc(dist, q_pids, g_pids, q_cams, g_cams, (0.1, 0.25, 0.5))
    # f=0.1 -> 0 negatives allowed -> threshold below 0.2 -> TPR 1/2; f=0.25 -> 1 negative -> still 1/2;
    # f=0.5 -> 2 negatives (0.2, 0.3) -> threshold below 0.5 -> both positives
    assert out == {0.1: 0.5, 0.25: 0.5, 0.5: 1.0}
