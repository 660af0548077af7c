"""Fusion arithmetic and ranked lists against dense / brute-force references (no models)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from omnireid.data import TestSet
from omnireid.evaluation import (ReidEvaluator, RerankParams, compute_distance, distance_blocks, evaluate_rank_metrics,
                                 fuse_features, re_ranking, top_k_from_blocks)
from omnireid.evaluation.submission import block_top_k
from omnireid.utils.errors import ConfigError

WEIGHTS = [1.0, 0.5, 2.0]


def _models(seed: int = 0, nq: int = 12, ng: int = 40, dims=(8, 5, 12)):
    """Features of three 'models' (different dimensions) for the same images, and their labels."""
    g = torch.Generator().manual_seed(seed)
    pids = torch.randint(0, 6, (nq + ng,), generator=g)
    camids = torch.randint(0, 3, (nq + ng,), generator=g)
    centres = [torch.randn(6, d, generator=g) for d in dims]
    feats = [c[pids] + 0.8 * torch.randn(nq + ng, c.shape[1], generator=g) for c in centres]
    return feats, pids, camids, nq


def _evaluate(features, pids, camids, nq, *opts_kwargs, **kwargs) -> dict[str, float]:
    """The reid protocol evaluator (what `train --eval-only` uses) on the given features."""
    evaluator = ReidEvaluator(nq, **kwargs)
    evaluator.reset()
    n = len(pids)
    evaluator.process({"targets": pids, "camids": camids, "indices": torch.arange(n)}, {"features": features})
    return evaluator.evaluate()


def _dense_reference(feats, nq, metric):
    """Weighted mean of the models' dense distance matrices (q-g, q-q, g-g)."""
    total = sum(WEIGHTS)

    def mean(a, b):
        return sum(w * compute_distance(f[a], f[b], metric).double() for f, w in zip(feats, WEIGHTS)) / total

    q, g = slice(0, nq), slice(nq, None)
    return mean(q, g), mean(q, q), mean(g, g)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_distance_fusion_is_the_weighted_mean_of_the_distances(metric):
    feats, pids, camids, nq = _models()
    fused = fuse_features(feats, WEIGHTS, "distance", metric)
    source = distance_blocks(fused[:nq], fused[nq:], metric, memory_budget_mb=0.001)  # many small blocks
    blocks = torch.cat([b for _, b in source.blocks(3)])
    q_g, _, _ = _dense_reference(feats, nq, metric)
    torch.testing.assert_close(blocks.double(), q_g, atol=1e-5, rtol=1e-5)
    ref = evaluate_rank_metrics(q_g.float(), pids[:nq], pids[nq:], camids[:nq], camids[nq:]).summary()
    got = _evaluate(fused, pids, camids, nq, metric=metric, memory_budget_mb=0.001)
    assert got == pytest.approx(ref, abs=1e-6)


def test_distance_fusion_with_reranking_reranks_the_fused_distances():
    feats, pids, camids, nq = _models(seed=1)
    q_g, q_q, g_g = _dense_reference(feats, nq, "cosine")
    params = RerankParams(k1=6, k2=3, lambda_value=0.3)
    dense = re_ranking(q_g.float(), q_q.float(), g_g.float(), k1=6, k2=3, lambda_value=0.3)
    ref = evaluate_rank_metrics(dense, pids[:nq], pids[nq:], camids[:nq], camids[nq:]).summary()
    fused = fuse_features(feats, WEIGHTS, "distance", "cosine")
    got = _evaluate(fused, pids, camids, nq, rerank=params, memory_budget_mb=0.01)
    assert got == pytest.approx(ref, abs=1e-4)


def test_concat_fusion_weights_the_normalised_features():
    feats, pids, camids, nq = _models(seed=2)
    # by hand: cosine of [w_i f_i/|f_i|] = sum_i w_i^2 cos_i / sum_i w_i^2
    sims = sum(w * w * (1 - compute_distance(f[:nq], f[nq:], "cosine").double()) for f, w in zip(feats, WEIGHTS))
    ref_dist = 1 - sims / sum(w * w for w in WEIGHTS)
    fused = fuse_features(feats, WEIGHTS, "concat", "cosine")
    assert fused.shape == (len(pids), sum(f.shape[1] for f in feats))
    torch.testing.assert_close(compute_distance(fused[:nq], fused[nq:]).double(), ref_dist, atol=1e-5, rtol=1e-5)
    ref = evaluate_rank_metrics(ref_dist.float(), pids[:nq], pids[nq:], camids[:nq], camids[nq:]).summary()
    assert _evaluate(fused, pids, camids, nq) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("fusion", ["concat", "distance"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_fused_features_are_ranked_without_a_copy(fusion, metric):
    # the fused evaluation's memory does not grow with the number of models: the fused features come
    # prepared, so the evaluator ranks them where they are (only its bounded blocks are allocated)
    feats, pids, camids, nq = _models(seed=3)
    fused = fuse_features(feats, WEIGHTS, fusion, metric)
    source = distance_blocks(fused[:nq], fused[nq:], metric)
    assert source.query.data_ptr() == fused.data_ptr()
    assert source.gallery.data_ptr() == fused[nq:].data_ptr()
    single = distance_blocks(feats[0][:nq], feats[0][nq:], metric)  # raw features: one prepared copy
    assert (single.query.data_ptr() == feats[0].data_ptr()) == (metric == "euclidean")


def test_cosine_prepare_is_f_normalize_without_temporaries():
    from omnireid.evaluation.distance import _NORM_ROWS, get_metric

    x = torch.randn(2 * _NORM_ROWS + 3, 7) * 3
    x[5] = 0  # a zero row stays zero (F.normalize's eps)
    prepared = get_metric("cosine").prepare(x)
    assert torch.equal(prepared, torch.nn.functional.normalize(x, dim=1))
    unit = prepared[6:]
    assert get_metric("cosine").prepare(unit).data_ptr() == unit.data_ptr()  # already unit length: no copy


def test_fusion_errors():
    feats, *_ = _models()
    with pytest.raises(ConfigError, match="3 models"):
        fuse_features(feats, [1, 2], "concat")
    with pytest.raises(ConfigError, match="> 0"):
        fuse_features(feats, [1, 0, 1], "concat")
    with pytest.raises(ConfigError, match="--fusion"):
        fuse_features(feats, WEIGHTS, "median")


class _MatrixBlocks:
    """A DistanceBlocks source over a given dense matrix."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix
        self.num_query, self.num_gallery = matrix.shape

    def blocks(self, rows):
        for s in range(0, self.num_query, rows):
            yield s, self.matrix[s : s + rows]

    def bytes_per_element(self) -> int:
        return 4


@pytest.mark.parametrize("k", [1, 4, 9, 30])
def test_top_k_equals_a_stable_brute_force_sort_with_ties(k):
    # small integer distances: many ties, broken by the smaller gallery index
    rng = np.random.default_rng(k)
    matrix = torch.from_numpy(rng.integers(0, 4, size=(13, 9)).astype(np.float32))
    out = io.BytesIO()
    indices, distances = top_k_from_blocks(_MatrixBlocks(matrix), k, memory_budget_mb=0.0002, distmat_file=out)
    brute = np.argsort(matrix.numpy(), axis=1, kind="stable")[:, : min(k, 9)]
    np.testing.assert_array_equal(indices, brute)
    np.testing.assert_array_equal(distances, np.take_along_axis(matrix.numpy(), brute, axis=1))
    out.seek(0)
    np.testing.assert_array_equal(np.load(out), matrix.numpy().astype(np.float16))


def test_block_top_k_on_random_distances():
    block = torch.rand(7, 50)
    idx, dist = block_top_k(block, 10)
    ref = torch.sort(block, dim=1, stable=True)
    torch.testing.assert_close(idx, ref.indices[:, :10])
    torch.testing.assert_close(dist, ref.values[:, :10])


def test_evaluator_distances_serve_unlabelled_test_sets():
    """The blocks `omnireid submit` ranks are the evaluator's: AQE + metric, no labels needed."""
    feats, _, _, nq = _models(seed=3)
    fused = fuse_features(feats, WEIGHTS, "concat")
    test_set = TestSet("naic", "reid", [{"img_path": f"{i}.png"} for i in range(len(fused))], {"num_query": nq})
    from omnireid.config import get_cfg

    cfg = get_cfg()
    evaluator = ReidEvaluator.from_config(cfg, test_set)
    indices, _ = top_k_from_blocks(evaluator.distances(fused), 5)
    ref = torch.sort(compute_distance(fused[:nq], fused[nq:]), dim=1, stable=True).indices[:, :5]
    np.testing.assert_array_equal(indices, ref.numpy())


def test_peak_memory_sees_each_step_even_after_a_larger_one():
    import sys

    from omnireid.utils.memory import PeakMemory

    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM reset is Linux-only")
    with PeakMemory() as first:
        big = torch.ones(20_000_000)  # 76 MB
        del big
    with PeakMemory() as second:
        small = torch.ones(5_000_000)  # 19 MB, after the larger step freed its memory
        del small
    assert first.peak_mb > 60 and 15 < second.peak_mb < 40
