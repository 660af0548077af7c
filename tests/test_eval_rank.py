"""evaluate_rank / ROC / CUHK03 against hand-computed cases and the plain-loop reference."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from omnireid.evaluation.rank import RankAccumulator, evaluate_rank, evaluate_rank_cuhk03, evaluate_rank_metrics
from omnireid.evaluation.roc import ROC_FPRS, roc_key
from test_eval_brute_force import brute_rank, brute_roc


def random_case(rng, num_q, num_g, num_ids, num_cams, quantize=None):
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    q_cams = rng.integers(0, num_cams, num_q)
    g_cams = rng.integers(0, num_cams, num_g)
    dist = rng.random((num_q, num_g)).astype(np.float32)
    if quantize:
        dist = (np.floor(dist * quantize) / quantize).astype(np.float32)  # many exact ties
    return dist, q_pids, g_pids, q_cams, g_cams


def assert_same(ours, ref):
    cmc, ap, inp = ours
    rcmc, rap, rinp = ref
    np.testing.assert_array_equal(cmc, rcmc)
    np.testing.assert_allclose(ap, rap, rtol=0, atol=1e-12)
    np.testing.assert_allclose(inp, rinp, rtol=0, atol=1e-15)


def test_hand_computed_case():
    dist = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    q_pids, q_cams = np.array([1, 2]), np.array([0, 0])
    g_pids, g_cams = np.array([1, 1, 2, 1]), np.array([1, 0, 1, 2])
    cmc, ap, inp = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=3)
    # query 0: valid list g0 hit, g2 miss, g3 hit; query 1: all tied, valid order g0 g1 g2 g3, hit at g2 (pos 2)
    np.testing.assert_allclose(cmc, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(ap, [(1 + 2 / 3) / 2, 1 / 3])
    np.testing.assert_allclose(inp, [2 / 3, 1 / 3])


@pytest.mark.parametrize("seed", range(40))
def test_random_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    num_q, num_g = int(rng.integers(1, 30)), int(rng.integers(1, 60))
    num_ids, num_cams = int(rng.integers(1, 12)), int(rng.integers(1, 4))
    quantize = [None, 4, 10][seed % 3]
    case = random_case(rng, num_q, num_g, num_ids, num_cams, quantize)
    try:
        ref = brute_rank(*case, max_rank=10)
    except ValueError:
        with pytest.raises(ValueError, match="no query has a true match"):
            evaluate_rank(*case, max_rank=10)
        return
    for path in ("dense", "extract", "extract_sort"):
        acc = RankAccumulator(*case[1:], max_rank=10)
        dist = torch.from_numpy(case[0])
        for start in range(0, num_q, 3):
            acc.add_block(start, dist[start : start + 3], force_path=path)
        res = acc.result()
        assert_same((res.cmc, res.all_AP, res.all_INP), ref)
    assert_same(evaluate_rank(*case, max_rank=10), ref)


def test_edge_cases():
    rng = np.random.default_rng(0)
    # single camera everywhere: every same-pid item is junk -> no valid query
    dist = rng.random((4, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_rank(dist, np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3, 0, 1]), np.zeros(4, int), np.zeros(6, int))
    # identities with one image, one query without any match, one query with only junk
    q_pids, q_cams = np.array([0, 1, 9, 2]), np.array([0, 0, 0, 1])
    g_pids, g_cams = np.array([0, 1, 2, 3, 4, 5]), np.array([1, 1, 1, 0, 0, 0])
    ours = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    assert len(ours[0]) == 6  # clipped to the gallery size
    assert_same(ours, brute_rank(dist, q_pids, g_pids, q_cams, g_cams, 50))
    assert len(ours[1]) == 2


def test_float64_ties_not_collapsed():
    # two distances equal in float32 but not in float64 keep their float64 order
    dist = np.array([[1.0 + 1e-12, 1.0, 2.0]])
    cmc, ap, _ = evaluate_rank(dist, np.array([5]), np.array([5, 6, 7]), np.array([0]), np.array([1, 1, 1]), max_rank=3)
    np.testing.assert_allclose(cmc, [0, 1, 1])
    assert ap[0] == pytest.approx(0.5)


def test_float16_distmat_and_bad_input():
    rng = np.random.default_rng(1)
    dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, 10, 40, 5, 3)
    half = dist.astype(np.float16)
    assert_same(evaluate_rank(half, q_pids, g_pids, q_cams, g_cams, 5),
                brute_rank(half.astype(np.float32), q_pids, g_pids, q_cams, g_cams, 5))
    bad = dist.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(bad, q_pids, g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="shape"):
        evaluate_rank(dist[:, :5], q_pids, g_pids, q_cams, g_cams)


@pytest.mark.parametrize("threads", [1, 2])
def test_independent_of_chunk_size_and_threads(threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rng = np.random.default_rng(3)
        case = random_case(rng, 200, 500, 40, 4, quantize=50)
        base = evaluate_rank(*case, max_rank=20, memory_budget_mb=1000, num_threads=threads)
        for budget in (0.01, 0.2, 3):
            other = evaluate_rank(*case, max_rank=20, memory_budget_mb=budget, num_threads=3 - threads)
            for a, b in zip(base, other):
                np.testing.assert_array_equal(a, b)
        assert_same(base, brute_rank(*case, max_rank=20))
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("seed", range(12))
def test_roc_against_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    case = random_case(rng, int(rng.integers(2, 15)), int(rng.integers(5, 40)), 6, 3, quantize=[None, 8][seed % 2])
    fprs = (0.01, 0.1, 0.3)
    ref = brute_roc(*case, fprs)
    acc = RankAccumulator(*case[1:], max_rank=5, roc=True)
    acc.roc.fprs = fprs
    acc.roc.keep = int(np.floor(max(fprs) * acc.roc.num_negatives + 1e-9)) + 1
    for start in range(0, len(case[1]), 2):
        acc.add_block(start, torch.from_numpy(case[0][start : start + 2]))
    got = acc.roc.result()
    for f in fprs:
        assert got[roc_key(f)] == pytest.approx(ref[f], abs=1e-12), f


def test_roc_default_keys_and_chunking():
    rng = np.random.default_rng(7)
    case = random_case(rng, 60, 400, 20, 3)
    a = evaluate_rank_metrics(*case, roc=True, memory_budget_mb=0.02).roc
    b = evaluate_rank_metrics(*case, roc=True, memory_budget_mb=100).roc
    assert list(a) == [roc_key(f) for f in ROC_FPRS] == ["TPR@FPR=0.0001", "TPR@FPR=0.001", "TPR@FPR=0.01"]
    assert a == b
    ref = brute_roc(*case, ROC_FPRS)
    for f in ROC_FPRS:
        assert a[roc_key(f)] == pytest.approx(ref[f], abs=1e-12)


def test_cuhk03_deterministic_when_one_image_per_identity():
    rng = np.random.default_rng(5)
    g_pids = np.arange(30)
    g_cams = np.ones(30, dtype=int)
    q_pids = rng.integers(0, 30, 12)
    q_cams = np.zeros(12, dtype=int)
    dist = rng.random((12, 30)).astype(np.float32)
    cmc, ap = evaluate_rank_cuhk03(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10, num_repeats=3)
    rcmc, rap, _ = brute_rank(dist, q_pids, g_pids, q_cams, g_cams, 10)
    np.testing.assert_allclose(cmc, rcmc, atol=1e-6)
    np.testing.assert_allclose(ap, rap, atol=1e-12)


def test_cuhk03_matches_exact_expectation():
    # 1 query, gallery: identity 0 (query's) has 2 images, identities 1 and 2 have 2 images each.
    dist = np.array([[0.1, 0.5, 0.2, 0.6, 0.3, 0.05]], dtype=np.float32)
    g_pids = np.array([0, 0, 1, 1, 2, 2])
    g_cams = np.array([1, 1, 1, 1, 1, 1])
    groups = {pid: np.flatnonzero(g_pids == pid) for pid in (0, 1, 2)}
    expected = np.zeros(3)
    combos = list(itertools.product(*groups.values()))
    for combo in combos:  # exact average over every single-shot gallery
        order = sorted(combo, key=lambda g: (dist[0, g], g))
        rank = [g_pids[g] for g in order].index(0)
        expected += np.arange(3) >= rank
    expected /= len(combos)
    cmc, _ = evaluate_rank_cuhk03(dist, np.array([0]), g_pids, np.array([0]), g_cams, max_rank=3, num_repeats=5000, seed=1)
    np.testing.assert_allclose(cmc, expected, atol=0.03)  # ~4 standard errors
    again, _ = evaluate_rank_cuhk03(dist, np.array([0]), g_pids, np.array([0]), g_cams, max_rank=3, num_repeats=5000, seed=1)
    np.testing.assert_array_equal(cmc, again)
