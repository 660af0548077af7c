"""Top-k metrics (torch and faiss backends) against the exhaustive metrics and a direct loop."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from omnireid.evaluation import evaluate_features, evaluate_topk


def data(seed=0, nq=40, ng=400, dim=24):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, dim))
    q_pids, g_pids = rng.integers(0, 30, nq), rng.integers(0, 30, ng)
    q = (centres[q_pids] + rng.standard_normal((nq, dim))).astype(np.float32)
    g = (centres[g_pids] + rng.standard_normal((ng, dim))).astype(np.float32)
    return q, g, q_pids, g_pids, rng.integers(0, 3, nq), rng.integers(0, 3, ng)


def direct_topk(q, g, q_pids, g_pids, q_cams, g_cams, k):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    dist = 1 - qn.astype(np.float64) @ gn.astype(np.float64).T
    ranks1, aps = [], []
    for i in range(len(q)):
        order = [j for j in np.argsort(dist[i]) if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        matches = [g_pids[j] == q_pids[i] for j in order]
        m = sum(matches)
        if m == 0:
            continue
        top = matches[:k]
        hits, prec = 0, 0.0
        for pos, hit in enumerate(top):
            if hit:
                hits += 1
                prec += hits / (pos + 1)
        aps.append(prec / min(m, k))
        ranks1.append(top[0])
    return np.mean(ranks1) * 100, np.mean(aps) * 100


def test_full_depth_equals_exhaustive_metrics():
    q, g, *ids = data()
    full = evaluate_features(q, g, *ids, max_rank=50).summary()
    top = evaluate_topk(q, g, *ids, k=len(g), backend="torch")
    for r in (1, 5, 10):
        assert top[f"Rank-{r}"] == pytest.approx(full[f"Rank-{r}"], abs=1e-4)
    assert top[f"mAP@{len(g)}"] == pytest.approx(full["mAP"], abs=1e-9)
    assert top[f"MatchRecall@{len(g)}"] == pytest.approx(100.0)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_against_direct_loop(k):
    q, g, *ids = data(1)
    rank1, map_k = direct_topk(q, g, *ids, k)
    for backend in ("torch", "faiss_flat"):
        res = evaluate_topk(q, g, *ids, k=k, backend=backend, memory_budget_mb=0.01)
        assert res["Rank-1"] == pytest.approx(rank1, abs=1e-9)
        assert res[f"mAP@{k}"] == pytest.approx(map_k, abs=1e-9)


def test_approximate_backends_run_and_are_close():
    pytest.importorskip("faiss")
    q, g, *ids = data(2, nq=60, ng=2000, dim=32)
    exact = evaluate_topk(q, g, *ids, k=10, backend="faiss_flat")
    for backend, opts in (("faiss_ivf", {"nlist": 16, "nprobe": 16}), ("faiss_hnsw", {"m": 16, "ef_search": 64})):
        res = evaluate_topk(q, g, *ids, k=10, backend=backend, **opts)
        assert abs(res["Rank-1"] - exact["Rank-1"]) <= 5.0
    # euclidean works too and every probed list is exhaustive with nprobe == nlist
    e1 = evaluate_topk(q, g, *ids, k=10, metric="euclidean", backend="faiss_flat")
    e2 = evaluate_topk(q, g, *ids, k=10, metric="euclidean", backend="torch")
    assert e1 == pytest.approx(e2)


def test_missing_faiss_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    q, g, *ids = data()
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        evaluate_topk(q, g, *ids, k=5, backend="faiss_flat")
    with pytest.raises(KeyError, match="Unknown search backend"):
        evaluate_topk(q, g, *ids, k=5, backend="annoy")
    assert "Rank-1" in evaluate_topk(q, g, *ids, k=5, backend="torch")
