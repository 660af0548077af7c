"""Attribute metrics against hand-computed cases and a brute-force per-element count."""
import itertools

import numpy as np
import pytest

from omnireid.tasks.attributes.metrics import binary_attribute_metrics, evaluate_attributes, group_metrics
from omnireid.tasks.attributes.schema import AttributeGroup, AttributeSchema

PROBS = np.array([[0.9, 0.2, 0.6],
                  [0.4, 0.7, 0.1],
                  [0.8, 0.5, 0.3],   # 0.5 is not > 0.5: negative at the default threshold
                  [0.1, 0.1, 0.2]])  # no predicted positive
LABELS = np.array([[1, 0, 1],
                   [1, 1, 0],
                   [0, 1, 0],
                   [0, 0, 0]])


def test_hand_computed_case():
    m = binary_attribute_metrics(PROBS, LABELS)
    # attr 0: P=2 (rows 0,1), TP=1; N=2, TN=1 -> (1/2 + 1/2)/2; attr 1: TP=1/2, TN=2/2; attr 2: 1/1, 3/3
    np.testing.assert_allclose(m.tpr, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(m.tnr, [0.5, 1.0, 1.0])
    np.testing.assert_allclose(m.label_ma, [0.5, 0.75, 1.0])
    assert m.mA == pytest.approx(0.75)
    # rows: (inter, union, |pred|, |gt|) = (2,2,2,2), (1,2,1,2), (0,2,1,1), (0,0,0,0)
    assert m.accuracy == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert m.precision == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert m.recall == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    # F1 of the mean precision and mean recall (not the mean of per-image F1, which is 0.41667)
    assert m.f1 == pytest.approx(2 * 0.5 * 0.375 / (0.5 + 0.375))
    assert m.f1 != pytest.approx((1 + 2 / 3 + 0 + 0) / 4)
    assert m.instances_without_predictions == 1
    assert m.attributes_without_positives == []
    np.testing.assert_allclose(m.positive_ratio, [0.5, 0.5, 0.25])


def test_threshold_is_strict_and_configurable():
    assert binary_attribute_metrics(PROBS, LABELS, threshold=0.5).tpr[1] == pytest.approx(0.5)
    m = binary_attribute_metrics(PROBS, LABELS, threshold=0.45)  # 0.5 > 0.45: row 2 predicts attr 1
    assert m.tpr[1] == pytest.approx(1.0)
    assert m.tpr[0] == pytest.approx(0.5)  # 0.4 is still below
    assert binary_attribute_metrics(np.full((1, 1), 0.7), np.ones((1, 1)), threshold=0.7).tpr[0] == 0.0


def test_attribute_without_positives_counts_tpr_zero():
    labels = LABELS.copy()
    labels[:, 2] = 0
    m = binary_attribute_metrics(PROBS, labels)
    # attr 2 has no positive: TPR = 0 (PAR's eps convention), TNR = 3/4 (row 0 predicts it)
    assert m.tpr[2] == 0.0
    assert m.tnr[2] == pytest.approx(0.75)
    assert m.label_ma[2] == pytest.approx(0.375)
    assert m.attributes_without_positives == ["2"]


def test_instance_without_predicted_positive_has_precision_zero():
    probs = np.array([[0.1, 0.2], [0.9, 0.1]])
    labels = np.array([[1, 0], [1, 0]])
    m = binary_attribute_metrics(probs, labels)
    # row 0: nothing predicted, one positive label -> precision 0, recall 0, accuracy 0
    assert m.precision == pytest.approx(0.5)
    assert m.recall == pytest.approx(0.5)
    assert m.accuracy == pytest.approx(0.5)
    assert m.instances_without_predictions == 1


def test_mask_excludes_unknown_labels():
    mask = np.ones_like(LABELS)
    mask[2, 0] = 0  # row 2 predicted attr 0 (a false positive) but the label is unknown
    m = binary_attribute_metrics(PROBS, LABELS, mask)
    assert m.tnr[0] == pytest.approx(1.0)  # N = 1 (row 3), TN = 1
    assert m.negatives[0] == 1
    # row 2 now: gt {1}, pred {} -> acc 0, prec 0, rec 0; other rows unchanged
    assert m.precision == pytest.approx(2 / 4)
    assert m.instances_without_predictions == 2
    # an attribute with no known label has no mA and is left out of the mean
    mask[:, 1] = 0
    m = binary_attribute_metrics(PROBS, LABELS, mask)
    assert np.isnan(m.label_ma[1])
    assert m.mA == pytest.approx((m.label_ma[0] + m.label_ma[2]) / 2)
    # an image with no known label is left out of the instance means
    mask = np.ones_like(LABELS)
    mask[3] = 0
    m = binary_attribute_metrics(PROBS, LABELS, mask)
    assert m.num_instances == 3
    assert m.accuracy == pytest.approx(1.5 / 3)


def _brute_force(probs, labels, threshold):
    n, a = labels.shape
    ma = []
    for j in range(a):
        tp = sum(1 for i in range(n) if labels[i][j] == 1 and probs[i][j] > threshold)
        tn = sum(1 for i in range(n) if labels[i][j] == 0 and probs[i][j] <= threshold)
        p = sum(1 for i in range(n) if labels[i][j] == 1)
        ma.append(((tp / p if p else 0.0) + (tn / (n - p) if n - p else 0.0)) / 2)
    acc, prec, rec = [], [], []
    for i in range(n):
        pred = {j for j in range(a) if probs[i][j] > threshold}
        gt = {j for j in range(a) if labels[i][j] == 1}
        acc.append(len(pred & gt) / len(pred | gt) if pred | gt else 0.0)
        prec.append(len(pred & gt) / len(pred) if pred else 0.0)
        rec.append(len(pred & gt) / len(gt) if gt else 0.0)
    p, r = sum(prec) / n, sum(rec) / n
    return sum(ma) / a, sum(acc) / n, p, r, (2 * p * r / (p + r) if p + r else 0.0)


@pytest.mark.parametrize("seed,threshold", list(itertools.product(range(4), (0.3, 0.5))))
def test_random_against_brute_force(seed, threshold):
    rng = np.random.default_rng(seed)
    labels = (rng.random((40, 7)) < rng.uniform(0.05, 0.6, 7)).astype(int)
    probs = np.clip(labels * 0.3 + rng.random((40, 7)) * 0.7, 0, 1)
    m = binary_attribute_metrics(probs, labels, threshold=threshold)
    np.testing.assert_allclose([m.mA, m.accuracy, m.precision, m.recall, m.f1],
                               _brute_force(probs, labels, threshold), rtol=1e-12)


def test_group_accuracy_and_balanced_accuracy():
    scores = np.eye(3)[[0, 2, 2, 1, 0, 0]]
    labels = np.array([0, 1, 2, -1, 0, 0])
    g = group_metrics(scores, labels, "age", ["young", "adult", "old"])
    assert g.count == 5
    assert g.accuracy == pytest.approx(4 / 5)
    assert g.balanced_accuracy == pytest.approx((1 + 0 + 1) / 3)
    with pytest.raises(ValueError, match="labels must be in"):
        group_metrics(scores, np.array([0, 1, 3, -1, 0, 0]), "age", ["young", "adult", "old"])


def test_evaluate_attributes_splits_binary_and_groups():
    schema = AttributeSchema(("hat", "bag"), (AttributeGroup("age", ("young", "adult", "old")),))
    scores = np.array([[0.9, 0.1, 0.2, 0.7, 0.1],
                       [0.2, 0.8, 0.6, 0.3, 0.1]])
    res = evaluate_attributes(scores, schema, np.array([[1, 0], [0, 1]]), None, np.array([[1], [2]]))
    summary = res.summary()
    assert summary["mA"] == pytest.approx(100.0)
    assert summary["age_acc"] == pytest.approx(50.0)
    assert summary["group_acc"] == pytest.approx(50.0)
    rows = res.table()
    assert [r["attribute"] for r in rows] == ["hat", "bag", "age"]
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        evaluate_attributes(scores[:, :4], schema, np.zeros((2, 2)), None, np.zeros((2, 1)))
