"""Fine-grained retrieval metrics and the exact k-NN kernel against hand-computed cases, a plain
per-query loop and pytorch-metric-learning's AccuracyCalculator."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireid.evaluation.knn import nearest_neighbours
from omnireid.evaluation.retrieval import evaluate_retrieval


def brute_neighbours(q, g, k, exclude_self):
    """Per query: gallery items sorted by (squared L2 distance in float64, index); own index removed."""
    d = ((q[:, None, :].astype(np.float64) - g[None, :, :].astype(np.float64)) ** 2).sum(-1)
    out = []
    for i in range(len(q)):
        cols = [j for j in range(len(g)) if not (exclude_self and j == i)]
        order = sorted(cols, key=lambda j: (d[i, j], j))[:k]
        out.append(order + [-1] * (k - len(order)))
    return np.array(out, dtype=np.int64).reshape(len(q), k)


def brute_metrics(q, q_labels, g=None, g_labels=None, ks=(1, 2, 4, 8)):
    """Textbook definitions, one query at a time (Recall@K, R-Precision, MAP@R; lone queries skipped)."""
    same = g is None
    g, g_labels = (q, q_labels) if same else (g, g_labels)
    order = brute_neighbours(q, g, len(g), same)
    recall = {k: [] for k in ks}
    rp, mapr, skipped = [], [], 0
    for i in range(len(q)):
        ranked = [j for j in order[i] if j >= 0]
        rel = [g_labels[j] == q_labels[i] for j in ranked]
        r = sum(rel)
        if r == 0:
            skipped += 1
            continue
        for k in ks:
            recall[k].append(any(rel[:k]))
        rp.append(sum(rel[:r]) / r)
        total, hits = 0.0, 0
        for pos, is_rel in enumerate(rel[:r], 1):
            if is_rel:
                hits += 1
                total += hits / pos
        mapr.append(total / r)
    out = {f"Recall@{k}": 100 * np.mean(v) for k, v in recall.items()}
    out.update({"R-Precision": 100 * np.mean(rp), "MAP@R": 100 * np.mean(mapr), "SkippedQueries": float(skipped)})
    return out


def test_hand_computed_case():
    # positions on a line, squared L2: query 0 -> [1(A) 2(B) 3(A) 4(C)], query 1 -> [0(A) 2(B) 3(A) 4(C)],
    # query 3 -> [2(B) 1(A) 0(A) 4(C)]; queries 2 (B) and 4 (C) have no other item of their class
    x = np.array([[0.0], [1.0], [3.0], [4.0], [10.0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 0, 2])
    res = evaluate_retrieval(x, labels, recall_ks=(1, 2), metric="euclidean").summary()
    assert res["Recall@1"] == pytest.approx(100 * 2 / 3)
    assert res["Recall@2"] == pytest.approx(100.0)
    assert res["R-Precision"] == pytest.approx(50.0)
    assert res["MAP@R"] == pytest.approx(100 * (0.5 + 0.5 + 0.25) / 3)
    assert res["SkippedQueries"] == 2


def test_ties_are_broken_by_gallery_index():
    # query 0 sees item 1 (other class) and item 2 (its class) at the same distance 4: item 1 comes first
    x = np.array([[0.0], [2.0], [-2.0], [5.0]], dtype=np.float32)
    labels = np.array([0, 1, 0, 1])
    res = evaluate_retrieval(x, labels, recall_ks=(1, 2), metric="euclidean").summary()
    assert res == pytest.approx({"Recall@1": 50.0, "Recall@2": 100.0, "R-Precision": 50.0, "MAP@R": 50.0,
                                 "SkippedQueries": 0.0})


def test_query_masked_by_index_not_by_dropping_the_top_hit():
    # item 1 is a duplicate of item 0 (distance 0, like the query itself) but of another class: it must
    # stay in query 0's list, first (lower index than item 2)
    x = np.array([[0.0], [0.0], [1.0]], dtype=np.float32)
    labels = np.array([0, 1, 0])
    nn = nearest_neighbours(x, None, 2, metric="euclidean")
    assert nn.indices.tolist() == [[1, 2], [0, 2], [0, 1]]
    res = evaluate_retrieval(x, labels, recall_ks=(1,), metric="euclidean").summary()
    assert res["Recall@1"] == pytest.approx(50.0)  # query 0 misses, query 2 hits; query 1 is alone
    assert res["SkippedQueries"] == 1


def test_query_gallery_split_counts_queries_without_match():
    q = np.array([[0.0], [5.0], [9.0]], dtype=np.float32)
    g = np.array([[1.0], [4.0], [6.0], [0.5]], dtype=np.float32)
    q_labels, g_labels = np.array([0, 1, 7]), np.array([0, 0, 1, 1])
    res = evaluate_retrieval(q, q_labels, g, g_labels, recall_ks=(1, 2), metric="euclidean").summary()
    assert res == pytest.approx(brute_metrics(q, q_labels, g, g_labels, ks=(1, 2)))
    assert res["SkippedQueries"] == 1  # label 7 is not in the gallery


def test_no_query_with_a_match_is_an_error():
    with pytest.raises(ValueError, match="no query has another item"):
        evaluate_retrieval(np.eye(3, dtype=np.float32), np.array([0, 1, 2]))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("budget", [1024, 0.004])
def test_against_plain_loop_with_many_ties(seed, budget):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 160))
    x = rng.integers(-2, 3, (n, 3)).astype(np.float32)  # small integers: exact distances, frequent ties
    labels = rng.integers(0, max(2, n // 4), n)
    ks = (1, 2, 4, 8)
    ours = evaluate_retrieval(x, labels, recall_ks=ks, metric="euclidean", memory_budget_mb=budget).summary()
    assert ours == pytest.approx(brute_metrics(x, labels, ks=ks), abs=1e-9)
    g = rng.integers(-2, 3, (n + 5, 3)).astype(np.float32)
    g_labels = rng.integers(0, max(2, n // 4), n + 5)
    ours = evaluate_retrieval(x, labels, g, g_labels, recall_ks=ks, metric="euclidean",
                              memory_budget_mb=budget).summary()
    assert ours == pytest.approx(brute_metrics(x, labels, g, g_labels, ks=ks), abs=1e-9)


@pytest.mark.parametrize("budget", [1024, 0.004, 0.0005])
@pytest.mark.parametrize("k", [1, 10, 200])
def test_knn_exact_with_ties(k, budget):
    rng = np.random.default_rng(k)
    x = rng.integers(-2, 3, (120, 3)).astype(np.float32)
    g = rng.integers(-2, 3, (130, 3)).astype(np.float32)
    nn = nearest_neighbours(x, None, k, metric="euclidean", memory_budget_mb=budget)
    assert nn.indices.tolist() == brute_neighbours(x, x, k, True).tolist()
    nn = nearest_neighbours(x, g, k, metric="euclidean", memory_budget_mb=budget)
    assert nn.indices.tolist() == brute_neighbours(x, g, k, False).tolist()
    assert torch.isinf(nn.distances[nn.indices < 0]).all()
    nn64 = nearest_neighbours(x.astype(np.float64), None, k, metric="euclidean", memory_budget_mb=budget)
    assert nn64.indices.tolist() == brute_neighbours(x, x, k, True).tolist()


@pytest.mark.parametrize("num_threads", [2, 3, 4])
def test_knn_selection_threads_give_the_same_lists(num_threads):
    # tiles split into row and column slabs on several threads: same exact lists as the brute force
    rng = np.random.default_rng(num_threads)
    x = rng.integers(-2, 3, (150, 3)).astype(np.float32)
    g = rng.integers(-2, 3, (170, 3)).astype(np.float32)
    threads = torch.get_num_threads()
    for budget in (1024, 0.004):
        nn = nearest_neighbours(x, None, 9, metric="euclidean", memory_budget_mb=budget, num_threads=num_threads)
        assert nn.indices.tolist() == brute_neighbours(x, x, 9, True).tolist()
        nn = nearest_neighbours(x, g, 9, metric="euclidean", memory_budget_mb=budget, num_threads=num_threads)
        assert nn.indices.tolist() == brute_neighbours(x, g, 9, False).tolist()
    assert torch.get_num_threads() == threads  # the caller's setting is restored


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("k", [9, 40])
def test_knn_diagonal_tile_bounds_with_ties(k, num_threads):
    # diagonal tiles wider than one mirrored square (256): every item's first threshold is the k-th of
    # all the pairs its diagonal tile offers it, above and right of the diagonal; many exact ties
    rng = np.random.default_rng(k)
    x = rng.integers(-2, 3, (620, 3)).astype(np.float32)
    threads = torch.get_num_threads()
    for budget in (1024, 1.6):  # one 620-wide tile; tiles about 300 wide
        nn = nearest_neighbours(x, None, k, metric="euclidean", memory_budget_mb=budget, num_threads=num_threads)
        assert nn.indices.tolist() == brute_neighbours(x, x, k, True).tolist()
    assert torch.get_num_threads() == threads


def test_knn_cosine_symmetric_and_one_sided_agree():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    a = nearest_neighbours(x, None, 7)  # symmetric tiles
    b = nearest_neighbours(x, x, 7, exclude_self=True, memory_budget_mb=0.01)  # one-sided, small tiles
    assert torch.equal(a.indices, b.indices)
    assert torch.allclose(a.distances, b.distances, atol=1e-6)
    ref = 1 - torch.nn.functional.normalize(torch.from_numpy(x).double(), dim=1) @ \
        torch.nn.functional.normalize(torch.from_numpy(x).double(), dim=1).t()
    ref.fill_diagonal_(float("inf"))
    assert torch.equal(a.indices, torch.topk(ref, 7, largest=False).indices)  # no near-ties in random data


def test_faiss_backend_matches_exact_search():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 40, 400)
    x = (rng.standard_normal((40, 32))[labels] + rng.standard_normal((400, 32))).astype(np.float32)
    exact = evaluate_retrieval(x, labels, recall_ks=(1, 5, 10)).summary()
    assert evaluate_retrieval(x, labels, recall_ks=(1, 5, 10), backend="faiss_flat").summary() == pytest.approx(exact)


def test_matches_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 60, 400)
    labels[:5] = 1000 + np.arange(5)  # classes of one item: skipped by both
    x = (rng.standard_normal((1005, 32))[labels] + 1.5 * rng.standard_normal((400, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # L2 (theirs) and cosine (ours) order alike
    calc = pml.AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                                  k="max_bin_count", device=torch.device("cpu"))
    ref = calc.get_accuracy(x, labels)
    ours = evaluate_retrieval(x, labels, recall_ks=(1,)).summary()
    assert ours["Recall@1"] == pytest.approx(100 * ref["precision_at_1"], abs=1e-9)
    assert ours["R-Precision"] == pytest.approx(100 * ref["r_precision"], abs=1e-9)
    assert ours["MAP@R"] == pytest.approx(100 * ref["mean_average_precision_at_r"], abs=1e-9)
    assert ours["SkippedQueries"] == 5
