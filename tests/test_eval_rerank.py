"""Sparse k-reciprocal re-ranking against a dense, straightforward reference written from the paper
(Zhong et al., CVPR 2017, and the authors' published algorithm)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireid.evaluation import RerankParams, evaluate_features, evaluate_rank, re_ranking, re_ranking_features


def dense_reference(q_g, q_q, g_g, k1, k2, lam):
    """Dense N x N re-ranking in float64, one item at a time."""
    nq = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    original = (full / full.max(axis=0)).T  # column-max normalisation, then transpose
    n = original.shape[0]
    rank = np.argsort(original, axis=1, kind="stable")

    def reciprocal(i, k):
        forward = rank[i, : k + 1]
        return [j for j in forward if i in rank[j, : k + 1]]

    half = int(np.around(k1 / 2.0))
    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r)
        for c in r:
            rc = reciprocal(c, half)
            if len(set(rc) & set(r)) > 2.0 / 3 * len(rc):
                expanded |= set(rc)
        members = np.array(sorted(expanded))
        w = np.exp(-original[i, members])
        v[i, members] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jaccard = np.zeros((nq, n))
    for i in range(nq):
        m = np.minimum(v[i][None, :], v).sum(axis=1)  # sum_k min(V[i,k], V[j,k]) for every j
        jaccard[i] = 1 - m / (2 - m)
    final = jaccard * (1 - lam) + original[:nq] * lam
    return final[:, nq:]


def features(seed, nq=30, ng=90, dim=12, num_ids=10):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    q_pids, g_pids = rng.integers(0, num_ids, nq), rng.integers(0, num_ids, ng)
    q = (centres[q_pids] + 0.8 * rng.standard_normal((nq, dim))).astype(np.float32)
    g = (centres[g_pids] + 0.8 * rng.standard_normal((ng, dim))).astype(np.float32)
    return q, g, q_pids, g_pids, rng.integers(0, 3, nq), rng.integers(0, 3, ng)


def euclid(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return ((a[:, None] - b[None]) ** 2).sum(-1)


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (5, 1, 0.5), (7, 3, 0.0), (4, 2, 1.0), (6, 7, 0.2)])
def test_matrices_against_dense_reference(k1, k2, lam):
    q, g, *_ = features(k1 * 10 + k2)
    qg, qq, gg = euclid(q, g), euclid(q, q), euclid(g, g)
    ref = dense_reference(qg, qq, gg, k1, k2, lam)
    ours = re_ranking(qg.astype(np.float32), qq.astype(np.float32), gg.astype(np.float32), k1, k2, lam)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1 - a.astype(np.float64) @ b.astype(np.float64).T


def test_features_path_and_same_map():
    q, g, q_pids, g_pids, q_cams, g_cams = features(3, nq=40, ng=160)
    ref = dense_reference(cosine(q, g), cosine(q, q), cosine(g, g), 20, 6, 0.3)
    for budget in (0.01, 1, 100):  # tiny budgets force many symmetric blocks and query chunks
        ours = re_ranking_features(q, g, "cosine", 20, 6, 0.3, memory_budget_mb=budget)
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    _, ap_ref, _ = evaluate_rank(ref, q_pids, g_pids, q_cams, g_cams)
    res = evaluate_features(q, g, q_pids, g_pids, q_cams, g_cams, rerank=RerankParams(20, 6, 0.3), memory_budget_mb=0.05)
    assert res.all_AP.mean() == pytest.approx(ap_ref.mean(), abs=1e-6)
    direct = evaluate_rank(re_ranking_features(q, g, "cosine", 20, 6, 0.3), q_pids, g_pids, q_cams, g_cams)
    np.testing.assert_array_equal(res.all_AP, direct[1])


def test_tiny_set_smaller_than_k():
    q, g, *_ = features(4, nq=3, ng=6)
    qg, qq, gg = euclid(q, g), euclid(q, q), euclid(g, g)
    ref = dense_reference(qg, qq, gg, 20, 6, 0.3)
    np.testing.assert_allclose(re_ranking(qg, qq, gg, 20, 6, 0.3), ref, atol=1e-4, rtol=0)


def test_thread_count_does_not_change_the_result():
    q, g, *_ = features(5, nq=25, ng=100)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = re_ranking_features(q, g, "euclidean", 10, 4, 0.3, memory_budget_mb=0.02, num_threads=1)
        torch.set_num_threads(2)
        two = re_ranking_features(q, g, "euclidean", 10, 4, 0.3, memory_budget_mb=0.02, num_threads=2)
    finally:
        torch.set_num_threads(old)
    np.testing.assert_array_equal(one, two)


def test_bad_parameters_and_shapes():
    with pytest.raises(ValueError, match="k1 >= 1"):
        RerankParams(0, 6, 0.3)
    with pytest.raises(ValueError, match="lambda must be in"):
        RerankParams(20, 6, 1.5)
    with pytest.raises(ValueError, match="distance shapes do not fit"):
        re_ranking(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 2)))
