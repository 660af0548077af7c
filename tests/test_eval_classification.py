"""Classification metrics against hand-computed cases and a per-sample loop."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image

from omnireid.evaluation.classification import (
    ClassificationAccumulator, confusion_csv, confusion_png, per_class_csv, true_class_rank,
)


def brute(logits, targets, num_classes, ks):
    """Sort classes by (-score, index) per sample; rank = position of the true class."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    hits = {k: 0 for k in ks}
    for scores, t in zip(logits.tolist(), targets.tolist()):
        order = sorted(range(num_classes), key=lambda c: (-scores[c], c))
        confusion[t, order[0]] += 1
        for k in ks:
            hits[k] += order.index(t) < k
    return confusion, {k: 100.0 * v / len(targets) for k, v in hits.items()}


def test_hand_computed_case_with_ties():
    logits = torch.tensor([
        [0.9, 0.1, 0.0],   # true 0: rank 0
        [0.5, 0.5, 0.0],   # true 1: tied with class 0, which has the lower index -> rank 1, predicted 0
        [0.2, 0.3, 0.1],   # true 2: rank 2
        [0.0, 0.0, 0.0],   # true 0: all tied -> rank 0, predicted 0
    ])
    targets = torch.tensor([0, 1, 2, 0])
    assert true_class_rank(logits, targets).tolist() == [0, 1, 2, 0]
    acc = ClassificationAccumulator(3, topk=(1, 2, 5))
    acc.add(logits[:2], targets[:2])
    acc.add(logits[2:], targets[2:])
    res = acc.result()
    assert res.confusion.tolist() == [[2, 0, 0], [1, 0, 0], [0, 1, 0]]
    s = res.summary()
    assert s["Top-1"] == pytest.approx(50.0)
    assert s["Top-2"] == pytest.approx(75.0)
    assert s["Top-5"] == pytest.approx(100.0)  # k beyond the number of classes: every sample
    assert s["MeanClassAcc"] == pytest.approx(100 * (1.0 + 0.0 + 0.0) / 3)
    assert res.per_class_accuracy.tolist() == [1.0, 0.0, 0.0]


def test_class_without_samples_is_left_out_of_the_mean():
    acc = ClassificationAccumulator(3, topk=(1,))
    acc.add(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), torch.tensor([0, 1, 1]))
    res = acc.result()
    assert np.isnan(res.per_class_accuracy[2])
    assert res.summary()["MeanClassAcc"] == pytest.approx(100 * (1.0 + 0.5) / 2)


@pytest.mark.parametrize("seed", range(3))
def test_against_per_sample_loop(seed):
    rng = np.random.default_rng(seed)
    num_classes = 7
    logits = torch.from_numpy(rng.integers(0, 4, (200, num_classes)).astype(np.float32))  # many ties
    targets = torch.from_numpy(rng.integers(0, num_classes, 200))
    acc = ClassificationAccumulator(num_classes, topk=(1, 3, 5))
    for s in range(0, 200, 33):
        acc.add(logits[s : s + 33], targets[s : s + 33])
    res = acc.result()
    confusion, topk = brute(logits, targets, num_classes, (1, 3, 5))
    assert res.confusion.tolist() == confusion.tolist()
    for k, v in topk.items():
        assert res.summary()[f"Top-{k}"] == pytest.approx(v)


def test_bad_inputs_are_clear_errors():
    acc = ClassificationAccumulator(3)
    with pytest.raises(ValueError, match="outside 0..2"):
        acc.add(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="4 classes, expected 3"):
        acc.add(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="no sample"):
        acc.result()


def test_artefacts():
    acc = ClassificationAccumulator(3, topk=(1,))
    acc.add(torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 2.0, 1.0]]), torch.tensor([0, 1, 2]))
    res = acc.result()
    names = ["cat", "dog", "bird, small"]
    rows = list(csv.reader(io.StringIO(confusion_csv(res.confusion, names))))
    assert rows[0] == ["true \\ predicted", "cat", "dog", "bird, small"]
    assert rows[3] == ["bird, small", "0", "1", "0"]
    rows = list(csv.reader(io.StringIO(per_class_csv(res, names))))
    assert rows[1:] == [["cat", "1", "1", "100.0000"], ["dog", "1", "1", "100.0000"], ["bird, small", "1", "0", "0.0000"]]
    for num in (3, 80):  # labelled, and colours only
        confusion = np.eye(num, dtype=np.int64) * 5
        img = Image.open(io.BytesIO(confusion_png(confusion, [f"class {i}" for i in range(num)])))
        assert img.format == "PNG" and img.width > num and img.height > num
        pixels = np.asarray(img.convert("RGB"))
        assert (pixels.reshape(-1, 3) == [8, 48, 107]).all(axis=1).any()  # the full-diagonal colour is drawn
