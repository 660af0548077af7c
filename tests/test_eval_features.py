"""evaluate_features (chunked, features in) against the plain-loop reference on exact distances."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireid.evaluation import compute_distance, evaluate_features, evaluate_rank
from omnireid.evaluation.roc import roc_key
from test_eval_brute_force import brute_rank, brute_roc


def ids(rng, num_q, num_g, num_ids, num_cams):
    return (rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g),
            rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g))


def numpy_distance(q, g, metric):
    q, g = np.asarray(q, np.float64), np.asarray(g, np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
        return 1 - q @ g.T
    return ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)


def check(result, ref):
    cmc, ap, inp = ref
    np.testing.assert_array_equal(result.cmc, cmc)
    np.testing.assert_allclose(result.all_AP, ap, atol=1e-12, rtol=0)
    np.testing.assert_allclose(result.all_INP, inp, atol=1e-15, rtol=0)


@pytest.mark.parametrize("seed", range(16))
def test_exact_distances_with_ties(seed):
    """Integer features: every distance is exact in float32 whatever the summation order, and
    duplicated rows / few distinct vectors create many exact ties."""
    rng = np.random.default_rng(seed)
    num_q, num_g = int(rng.integers(1, 25)), int(rng.integers(2, 70))
    metric = ["euclidean", "cosine"][seed % 2]
    if metric == "euclidean":
        q = rng.integers(-3, 4, (num_q, 6)).astype(np.float32)
        g = rng.integers(-3, 4, (num_g, 6)).astype(np.float32)
    else:  # +-1 entries in 4-d: unit vectors after /2, dot products multiples of 1/4
        q = rng.choice([-1.0, 1.0], (num_q, 4)).astype(np.float32)
        g = rng.choice([-1.0, 1.0], (num_g, 4)).astype(np.float32)
    g[num_g // 2 :] = g[: num_g - num_g // 2]  # duplicated gallery features
    id_arrays = ids(rng, num_q, num_g, int(rng.integers(1, 8)), int(rng.integers(1, 4)))
    dist = numpy_distance(q, g, metric)
    try:
        ref = brute_rank(dist, *id_arrays, 10)
    except ValueError:
        with pytest.raises(ValueError, match="no query has a true match"):
            evaluate_features(q, g, *id_arrays, metric=metric, max_rank=10)
        return
    for budget in (0.001, 0.05, 100):
        check(evaluate_features(q, g, *id_arrays, metric=metric, max_rank=10, memory_budget_mb=budget), ref)


def unambiguous_case(seed, num_q=20, num_g=60, dim=16):
    """Clustered float features whose float64 distances are at least 2e-6 apart within each row,
    so float32 rounding cannot change the order (the first such case from ``seed`` on)."""
    for attempt in range(1000):
        rng = np.random.default_rng(seed * 1000 + attempt)
        centres = rng.standard_normal((6, dim))
        id_arrays = ids(rng, num_q, num_g, 6, 3)
        q = (centres[id_arrays[0]] + rng.standard_normal((num_q, dim))).astype(np.float32)
        g = (centres[id_arrays[1]] + rng.standard_normal((num_g, dim))).astype(np.float32)
        dists = {m: numpy_distance(q, g, m) for m in ("cosine", "euclidean")}
        if all(np.diff(np.sort(d, axis=1), axis=1).min() > 2e-6 * max(1.0, np.abs(d).max()) for d in dists.values()):
            return q, g, id_arrays, dists
    raise AssertionError("no unambiguous case found")


@pytest.mark.parametrize("seed", range(8))
def test_random_float_features(seed):
    q, g, id_arrays, dists = unambiguous_case(seed)
    for metric, dist in dists.items():
        res = evaluate_features(q, g, *id_arrays, metric=metric, max_rank=20, memory_budget_mb=0.01)
        check(res, brute_rank(dist, *id_arrays, 20))


def test_float16_features_computed_in_float32():
    rng = np.random.default_rng(9)
    id_arrays = ids(rng, 15, 80, 5, 3)
    q = rng.standard_normal((15, 32)).astype(np.float16)
    g = rng.standard_normal((80, 32)).astype(np.float16)
    half = evaluate_features(torch.from_numpy(q), torch.from_numpy(g), *id_arrays, max_rank=10)
    full = evaluate_features(q.astype(np.float32), g.astype(np.float32), *id_arrays, max_rank=10)
    np.testing.assert_array_equal(half.cmc, full.cmc)
    np.testing.assert_array_equal(half.all_AP, full.all_AP)
    np.testing.assert_array_equal(half.all_INP, full.all_INP)


@pytest.mark.parametrize("threads", [1, 2])
def test_independent_of_chunks_and_threads_and_equal_to_full_matrix(threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rng = np.random.default_rng(11)
        id_arrays = ids(rng, 150, 900, 60, 5)
        q = rng.standard_normal((150, 64)).astype(np.float32)
        g = rng.standard_normal((900, 64)).astype(np.float32)
        results = [evaluate_features(q, g, *id_arrays, roc=True, memory_budget_mb=b, num_threads=t)
                   for b, t in ((0.02, 1), (0.3, 2), (500, None))]
        full = evaluate_rank(compute_distance(q, g), *id_arrays)
        for res in results:
            np.testing.assert_array_equal(res.cmc, results[0].cmc)
            np.testing.assert_array_equal(res.all_AP, results[0].all_AP)
            np.testing.assert_array_equal(res.all_INP, results[0].all_INP)
            assert res.roc == results[0].roc
        np.testing.assert_array_equal(results[0].all_AP, full[1])
    finally:
        torch.set_num_threads(old)


def test_roc_from_features_against_brute_force():
    rng = np.random.default_rng(12)
    id_arrays = ids(rng, 40, 300, 10, 3)
    q = rng.integers(-3, 4, (40, 8)).astype(np.float32)
    g = rng.integers(-3, 4, (300, 8)).astype(np.float32)
    res = evaluate_features(q, g, *id_arrays, metric="euclidean", roc=True, memory_budget_mb=0.01)
    ref = brute_roc(numpy_distance(q, g, "euclidean"), *id_arrays, (1e-4, 1e-3, 1e-2))
    for f, tpr in ref.items():
        assert res.roc[roc_key(f)] == pytest.approx(tpr, abs=1e-12)


def test_bad_inputs_name_the_problem():
    q, g = np.zeros((3, 4), np.float32), np.ones((5, 5), np.float32)
    p = (np.zeros(3, int), np.zeros(5, int), np.zeros(3, int), np.ones(5, int))
    with pytest.raises(ValueError, match="4-d but gallery features are 5-d"):
        evaluate_features(q, g, *p)
    with pytest.raises(KeyError, match="Unknown distance metric 'cosin'"):
        evaluate_features(q, g[:, :4], *p, metric="cosin")
    with pytest.raises(ValueError, match="3 query / 5 gallery distances but 3 query / 4 gallery ids"):
        evaluate_features(q, g[:, :4], p[0], p[1][:4], p[2], p[3][:4])
    with pytest.raises(TypeError, match="q_pids must hold integers"):
        evaluate_features(q, g[:, :4], p[0].astype(float), *p[1:])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_gallery_prepared_in_chunks_gives_the_brute_force_metrics(metric, monkeypatch):
    """Large galleries are prepared chunk by chunk (never copied whole): chunks of 7 rows
    (not a divisor of the gallery) must give the brute-force metrics, on exact ties and on floats."""
    from omnireid.evaluation import distance, features

    q, g, id_arrays, dists = unambiguous_case(3)
    exact = np.random.default_rng(5).choice([-1.0, 1.0], (60, 16)).astype(np.float32)
    exact[30:] = exact[:30]  # duplicated gallery rows: exact ties
    prepared_rows = []
    original = distance.DISTANCE_REGISTRY.get(metric).prepare

    def spy(self, feats, out=None):
        prepared_rows.append(len(feats))
        return original(self, feats, out=out)

    monkeypatch.setattr(distance.DISTANCE_REGISTRY.get(metric), "prepare", spy)
    monkeypatch.setattr(features, "GALLERY_CHUNK_BYTES", 7 * g.shape[1] * 4)
    monkeypatch.setattr(features, "PREPARED_GALLERY_BUDGET_FRACTION", 0.0)  # never copied whole
    for gallery, dist in ((g, dists[metric]), (exact, numpy_distance(q, exact, metric))):
        prepared_rows.clear()
        res = evaluate_features(q, gallery, *id_arrays, metric=metric, max_rank=20, memory_budget_mb=0.01)
        check(res, brute_rank(dist, *id_arrays, 20))
        assert max(prepared_rows[1:]) == 7 and sum(prepared_rows[1:]) % len(gallery) == 0  # [0]: the query
