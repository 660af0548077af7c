"""Average query expansion against the direct dense formula."""
from __future__ import annotations

import numpy as np
import pytest

from omnireid.evaluation import average_query_expansion


def direct_aqe(q, g, qe_time, qe_k, alpha):
    feats = np.concatenate([q, g]).astype(np.float64)
    for _ in range(qe_time):
        normed = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        sims = normed @ normed.T
        new = np.empty_like(feats)
        for i in range(len(feats)):
            top = np.argsort(-sims[i], kind="stable")[:qe_k]
            new[i] = (feats[top] * (sims[i, top] ** alpha)[:, None]).mean(axis=0)
        feats = new
    return feats[: len(q)], feats[len(q) :]


@pytest.mark.parametrize("qe_time,qe_k,alpha", [(1, 5, 3.0), (2, 3, 1.0), (1, 1, 3.0), (3, 4, 2.0)])
def test_matches_direct_formula(qe_time, qe_k, alpha):
    rng = np.random.default_rng(qe_time * 10 + qe_k)
    centres = rng.standard_normal((5, 16))
    q = (centres[rng.integers(0, 5, 20)] + 0.5 * rng.standard_normal((20, 16))).astype(np.float32)
    g = (centres[rng.integers(0, 5, 70)] + 0.5 * rng.standard_normal((70, 16))).astype(np.float32)
    ref_q, ref_g = direct_aqe(q, g, qe_time, qe_k, alpha)
    for budget in (0.002, 100):
        new_q, new_g = average_query_expansion(q, g, qe_time, qe_k, alpha, memory_budget_mb=budget)
        np.testing.assert_allclose(new_q.numpy(), ref_q, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(new_g.numpy(), ref_g, rtol=1e-4, atol=1e-5)


def test_inputs_untouched_and_errors():
    q = np.ones((3, 4), np.float32)
    g = np.arange(20, dtype=np.float32).reshape(5, 4)
    q0, g0 = q.copy(), g.copy()
    average_query_expansion(q, g, 1, 2, 3.0)
    np.testing.assert_array_equal(q, q0)
    np.testing.assert_array_equal(g, g0)
    with pytest.raises(ValueError, match="QE_K >= 1"):
        average_query_expansion(q, g, 1, 0, 3.0)
