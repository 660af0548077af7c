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


# ----------------------------------------------------------------------------- bfloat16 screening
def brute_rounded_neighbours(q, g, k, exclude_self, metric="cosine"):
    """Per query: gallery items sorted by (distance evaluated in float64 from the metric-prepared
    features, rounded to float32; index), own index removed: the screened search's definition."""
    from omnireid.evaluation.distance import get_metric, prepare_features

    m = get_metric(metric)
    a = prepare_features(q, m, "q").double().numpy()
    b = prepare_features(g, m, "g").double().numpy()
    if metric == "cosine":
        d = 1 - a @ b.T
    else:
        d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    d = d.astype(np.float32)
    out = []
    for i in range(len(q)):
        cols = [j for j in range(len(g)) if not (exclude_self and j == i)]
        out.append((sorted(cols, key=lambda j: (d[i, j], j)) + [-1] * k)[:k])
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("budget", [1024, 0.05])
def test_screened_search_matches_brute_force_with_ties(num_threads, budget):
    # small integers: every distance exact in float32, bfloat16-screened or not; many exact ties,
    # k larger than some rows' candidates (-1 padding), several tiles at the small budget
    rng = np.random.default_rng(num_threads)
    x = rng.integers(-2, 3, (230, 3)).astype(np.float32)
    g = rng.integers(-2, 3, (250, 3)).astype(np.float32)
    for k in (1, 9, 240):
        nn = nearest_neighbours(x, None, k, metric="euclidean", memory_budget_mb=budget, num_threads=num_threads,
                                screen=True)
        assert nn.indices.tolist() == brute_neighbours(x, x, k, True).tolist()
        nn = nearest_neighbours(x, g, k, metric="euclidean", memory_budget_mb=budget, num_threads=num_threads,
                                screen=True)
        assert nn.indices.tolist() == brute_neighbours(x, g, k, False).tolist()
        assert torch.isinf(nn.distances[nn.indices < 0]).all()


@pytest.mark.parametrize("num_threads", [1, 2])
def test_screened_search_is_exact_below_bfloat16_resolution(num_threads):
    # features that differ only below bfloat16's resolution (all screened distances nearly equal) plus
    # exact duplicates: the ranking comes from the rescored float64 distances, ties by index
    rng = np.random.default_rng(3)
    base = rng.standard_normal(64).astype(np.float32)
    x = base + 2.0**-12 * rng.standard_normal((300, 64)).astype(np.float32)
    x[100:120] = x[0]  # duplicates of item 0: equal distances to everything
    for budget in (1024, 0.1):
        nn = nearest_neighbours(x, None, 25, memory_budget_mb=budget, num_threads=num_threads, screen=True)
        assert nn.indices.tolist() == brute_rounded_neighbours(x, x, 25, True).tolist()
        nn = nearest_neighbours(x[:70], x, 25, memory_budget_mb=budget, num_threads=num_threads, screen=True)
        assert nn.indices.tolist() == brute_rounded_neighbours(x[:70], x, 25, False).tolist()


def test_screened_search_in_inference_mode_on_two_threads():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, 24)).astype(np.float32)
    threads = torch.get_num_threads()
    with torch.inference_mode():
        nn = nearest_neighbours(x, None, 12, memory_budget_mb=0.2, num_threads=2, screen=True)
    assert nn.indices.tolist() == brute_rounded_neighbours(x, x, 12, True).tolist()
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("screen", [True, False])
def test_screened_and_exact_tiles_give_the_textbook_metrics(screen):
    # classes of one item (skipped queries) and a query-gallery split with queries without any match
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 30, 300)
    labels[:6] = 100 + np.arange(6)
    x = rng.integers(-3, 4, (300, 4)).astype(np.float32)
    ours = evaluate_retrieval(x, labels, recall_ks=(1, 4), metric="euclidean", memory_budget_mb=0.1,
                              screen=screen).summary()
    assert ours == pytest.approx(brute_metrics(x, labels, ks=(1, 4)), abs=1e-9)
    assert ours["SkippedQueries"] == 6
    g, g_labels = x[100:], labels[100:]
    ours = evaluate_retrieval(x[:100], labels[:100], g, g_labels, recall_ks=(1, 4), metric="euclidean",
                              screen=screen).summary()
    assert ours == pytest.approx(brute_metrics(x[:100], labels[:100], g, g_labels, ks=(1, 4)), abs=1e-9)


def test_screening_is_skipped_where_its_margin_lets_everything_through():
    from omnireid.evaluation.distance import get_metric
    from omnireid.evaluation.knn import _Screen, _Workers

    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.standard_normal((3000, 32)).astype(np.float32))
    cosine, euclidean = get_metric("cosine"), get_metric("euclidean")
    unit = cosine.prepare(x)
    assert _Screen.create(cosine, unit, unit, 10, None, _Workers(1)) is not None
    far = x + 1000  # squared L2: the margin grows with |x|^2, the distances do not
    assert _Screen.create(euclidean, far, far, 10, None, _Workers(1)) is None
    nn = nearest_neighbours(far[:500].numpy(), None, 5, metric="euclidean")
    assert torch.equal(nn.indices, nearest_neighbours(far[:500].numpy(), None, 5, metric="euclidean",
                                                      screen=False).indices)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_screened_search_matches_rounded_brute_force_on_offset_clusters(seed, metric):
    # features far from the origin in few dimensions: bfloat16 rounding errors of the operands are
    # large next to the distances (wide margins, first thresholds from screened k-th values)
    rng = np.random.default_rng(seed)
    x = (rng.uniform(1, 30) + rng.uniform(0.05, 3) * rng.standard_normal((300, int(rng.integers(1, 6))))
         ).astype(np.float32)
    for budget in (1024, 0.1):
        nn = nearest_neighbours(x, None, 20, metric=metric, memory_budget_mb=budget, screen=True)
        assert nn.indices.tolist() == brute_rounded_neighbours(x, x, 20, True, metric).tolist()


def test_screened_search_without_a_bound_rescores_everything():
    # features so large that the bfloat16 GEMM could overflow float32: no margin, every pair rescored
    rng = np.random.default_rng(7)
    x = (2.0**30 * rng.integers(-2, 3, (150, 3))).astype(np.float32)
    for screen in (True, False):
        nn = nearest_neighbours(x, None, 8, metric="euclidean", memory_budget_mb=0.05, screen=screen)
        assert nn.indices.tolist() == brute_neighbours(x, x, 8, True).tolist()


@pytest.mark.parametrize("screen", [None, True])
def test_empty_query_or_gallery(screen):
    g = np.random.default_rng(8).standard_normal((50, 4)).astype(np.float32)
    nn = nearest_neighbours(np.zeros((0, 4), np.float32), g, 3, screen=screen)
    assert nn.indices.shape == (0, 3) and nn.distances.shape == (0, 3)
    nn = nearest_neighbours(g[:5], np.zeros((0, 4), np.float32), 3, screen=screen)
    assert (nn.indices == -1).all() and torch.isinf(nn.distances).all()
