"""Rank lists (the report's and the top-k metrics' source) and the full ROC curve, against direct loops."""
from __future__ import annotations

import numpy as np
import pytest
from test_eval_topk import data  # the same clustered features with junk

from omnireid.evaluation import evaluate_features, evaluate_rank_metrics, pair_distances, rank_lists, roc_curve
from omnireid.evaluation.roc import roc_key


@pytest.mark.parametrize("backend", ["torch", "faiss_flat"])
@pytest.mark.parametrize("k", [1, 7, 250])
def test_rank_lists_against_direct_loop(backend, k):
    q, g, q_pids, g_pids, q_cams, g_cams = data(3)
    lists = rank_lists(q, g, q_pids, g_pids, q_cams, g_cams, k=k, backend=backend, memory_budget_mb=0.01)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    dist = 1 - qn.astype(np.float64) @ gn.astype(np.float64).T
    for i in range(len(q)):
        order = [j for j in np.argsort(dist[i], kind="stable")
                 if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])][:k]
        got = lists.indices[i][lists.indices[i] >= 0]
        assert list(got) == order
        assert np.allclose(lists.distances[i][: len(order)], dist[i][order], atol=1e-5)
        assert list(lists.matches[i][: len(order)]) == [g_pids[j] == q_pids[i] for j in order]
        assert (lists.indices[i][len(order):] == -1).all() and np.isinf(lists.distances[i][len(order):]).all()
        assert lists.num_pos[i] == sum(g_pids[j] == q_pids[i] and g_cams[j] != q_cams[i] for j in range(len(g)))


def test_roc_curve_hand_computed():
    fpr, tpr, thr = roc_curve([0.1, 0.4, 0.6], [0.3, 0.5, 0.7, 0.9])
    # m negatives accepted -> threshold n_(m+1): 0.3, 0.5, 0.7, 0.9, inf
    assert fpr.tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert thr.tolist() == [0.3, 0.5, 0.7, 0.9, np.inf]
    assert tpr.tolist() == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])


@pytest.mark.parametrize("seed", [0, 1])
def test_roc_curve_points_equal_tpr_at_fpr(seed):
    rng = np.random.default_rng(seed)
    nq, ng = 60, 400
    q_pids, g_pids = rng.integers(0, 15, nq), rng.integers(0, 15, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    dist = rng.random((nq, ng)).astype(np.float32) + 0.3 * (q_pids[:, None] != g_pids[None, :])
    res = evaluate_rank_metrics(dist, q_pids, g_pids, q_cams, g_cams, roc=True)
    same = q_pids[:, None] == g_pids[None, :]
    pos = dist[same & (q_cams[:, None] != g_cams[None, :])]
    neg = dist[~same]
    fpr, tpr, _ = roc_curve(pos, neg)
    for f in (1e-4, 1e-3, 1e-2):
        m = int(np.floor(f * neg.size + 1e-9))
        assert fpr[m] == pytest.approx(m / neg.size)
        assert tpr[m] == pytest.approx(res.roc[roc_key(f)], abs=1e-12)
    thin_fpr, thin_tpr, _ = roc_curve(pos, neg, max_points=50)
    assert len(thin_fpr) == 50 and thin_fpr[0] == 0 and thin_fpr[-1] == 1
    assert np.all(np.diff(thin_tpr) >= 0)


def test_roc_curve_needs_both_kinds():
    with pytest.raises(ValueError, match="positive and negative"):
        roc_curve([], [0.1])


def test_pair_distances_are_the_roc_pairs():
    q, g, q_pids, g_pids, q_cams, g_cams = data(5, nq=40, ng=300)
    pos, neg, total = pair_distances(q, g, q_pids, g_pids, q_cams, g_cams, memory_budget_mb=0.01)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    dist = 1 - qn.astype(np.float64) @ gn.astype(np.float64).T
    same = q_pids[:, None] == g_pids[None, :]
    expected_pos = dist[same & (q_cams[:, None] != g_cams[None, :])]
    assert total == neg.size == int((~same).sum())
    assert np.allclose(np.sort(pos), np.sort(expected_pos), atol=1e-5)
    assert np.allclose(np.sort(neg), np.sort(dist[~same]), atol=1e-5)
    exact = evaluate_features(q, g, q_pids, g_pids, q_cams, g_cams, roc=True).roc
    fpr, tpr, _ = roc_curve(pos, neg)
    for f in (1e-3, 1e-2):
        assert tpr[int(np.floor(f * neg.size + 1e-9))] == pytest.approx(exact[roc_key(f)], abs=1e-12)
    _, sampled, total_again = pair_distances(q, g, q_pids, g_pids, q_cams, g_cams, max_negatives=1000)
    assert total_again == total and 800 < sampled.size < 1200
