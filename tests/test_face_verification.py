"""Verification protocol metrics against hand-computed cases and brute-force references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omnireid.tasks.face.verification import (best_threshold, evaluate_verification, fold_indices, kfold_accuracy,
                                              pair_distances, roc_curve, tar_at_far)


def test_kfold_accuracy_hand_checked_case():
    # positives at 0.1..0.5, negatives at 0.45 and 0.6..0.9; ten folds of one pair each.
    # Worked by hand: holding out 0.4 gives threshold (0.3+0.45)/2 = 0.375 (ties: the first best cut),
    # so 0.4 (same) is rejected; holding out 0.45 the others separate at 0.55, so 0.45 (different) is
    # accepted; holding out 0.5 gives 0.425 and rejects it. The 7 other folds are right.
    distances = np.array([0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9])
    issame = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    accuracies, thresholds = kfold_accuracy(distances, issame)
    assert accuracies.tolist() == [1, 1, 1, 0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_allclose(thresholds, [0.425, 0.425, 0.425, 0.375, 0.55, 0.425, 0.425, 0.425, 0.425, 0.425])
    result = evaluate_verification(distances, issame)
    assert result.accuracy_mean == pytest.approx(0.7)
    assert result.accuracy_std == pytest.approx(math.sqrt(0.7 * 0.3))


def test_separable_pairs_are_all_right():
    rng = np.random.default_rng(0)
    distances = np.concatenate([rng.uniform(0, 1, 300), rng.uniform(1.5, 4, 300)])
    issame = np.arange(600) < 300
    order = rng.permutation(600)
    result = evaluate_verification(distances[order], issame[order])
    assert result.accuracy_mean == 1.0 and result.accuracy_std == 0.0 and result.auc == 1.0
    assert all(1.0 < t < 1.5 for t in result.thresholds)


def _brute_force_kfold(distances, issame, num_folds=10):
    """Every midpoint tried with plain loops; the first best one wins."""
    n = len(distances)
    sizes = [n // num_folds + (1 if i < n % num_folds else 0) for i in range(num_folds)]
    starts = np.cumsum([0] + sizes)
    accs = []
    for f in range(num_folds):
        test = list(range(starts[f], starts[f + 1]))
        train = [i for i in range(n) if i not in test]
        values = sorted(set(distances[i] for i in train))
        candidates = [values[0] - 1] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1]
        best, best_correct = None, -1
        for t in candidates:
            correct = sum((distances[i] < t) == issame[i] for i in train)
            if correct > best_correct:
                best, best_correct = t, correct
        accs.append(np.mean([(distances[i] < best) == issame[i] for i in test]))
    return np.array(accs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kfold_accuracy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 97  # uneven folds
    issame = rng.random(n) < 0.5
    distances = np.round(np.where(issame, rng.normal(0.8, 0.4, n), rng.normal(1.4, 0.4, n)), 2)  # with ties
    accuracies, _ = kfold_accuracy(distances, issame)
    np.testing.assert_allclose(accuracies, _brute_force_kfold(distances, issame))


def test_folds_follow_unshuffled_kfold():
    assert [len(f) for f in fold_indices(23)] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert np.concatenate(fold_indices(23)).tolist() == list(range(23))
    with pytest.raises(ValueError, match="at least 10 pairs"):
        fold_indices(9)


def test_best_threshold_never_cuts_inside_ties():
    # accepting "the first two" of three equal distances is impossible: the cut is below or above all
    assert best_threshold(np.array([0.5, 0.5, 0.5]), np.array([True, True, False])) == 1.5


def test_tar_at_far_hand_checked():
    negatives = 1.0 + 0.001 * np.arange(2000)
    positives = np.array([0.5, 1.0005, 1.0015, 1.0025, 3.0])
    distances = np.concatenate([positives, negatives])
    issame = np.arange(len(distances)) < len(positives)
    # FAR 1e-3 of 2000 negatives: 2 may be accepted, so the bar is the 3rd smallest negative (1.002)
    assert tar_at_far(distances, issame, 1e-3) == pytest.approx(3 / 5)
    # FAR 1e-4: no negative accepted, the bar is the smallest negative (1.0)
    assert tar_at_far(distances, issame, 1e-4) == pytest.approx(1 / 5)
    metrics = evaluate_verification(distances, issame).metrics()
    assert metrics["TAR@FAR=0.001"] == pytest.approx(60.0) and metrics["TAR@FAR=0.0001"] == pytest.approx(20.0)


def test_roc_auc_matches_scikit_learn():
    from sklearn.metrics import roc_auc_score, roc_curve as sk_roc

    rng = np.random.default_rng(3)
    issame = rng.random(400) < 0.4
    distances = np.round(np.where(issame, rng.normal(1.0, 0.5, 400), rng.normal(1.6, 0.5, 400)), 1)
    result = evaluate_verification(distances, issame)
    assert result.auc == pytest.approx(roc_auc_score(issame, -distances))
    far, tar, _ = roc_curve(distances, issame)
    sk_far, sk_tar, _ = sk_roc(issame, -distances, drop_intermediate=False)
    np.testing.assert_allclose(far, sk_far)
    np.testing.assert_allclose(tar, sk_tar)


def test_pair_distances_are_squared_l2_of_normalised_embeddings():
    emb = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, -2.0]])
    d = pair_distances(emb, np.array([[0, 1], [1, 2], [0, 0]]))
    # (0.6, 0.8) vs (1, 0): 0.16 + 0.64 = 0.8; (1, 0) vs (0, -1): 2; identical: 0
    np.testing.assert_allclose(d, [0.8, 2.0, 0.0], atol=1e-12)
