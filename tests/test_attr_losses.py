"""Attribute losses against their formulas, written out element by element."""
import math

import numpy as np
import pytest
import torch

from omnireid.tasks.attributes.losses import (attribute_weights, group_cross_entropy_loss, positive_ratios,
                                              weighted_bce_loss)


def _bce(x, y):
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_positive_ratios_use_known_labels_only():
    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    mask = np.array([[1, 1, 1], [1, 1, 1], [0, 1, 0], [1, 1, 0]], dtype=np.float32)
    np.testing.assert_allclose(positive_ratios(labels, mask), [1 / 3, 1 / 4, 1.0])
    np.testing.assert_allclose(positive_ratios(labels, np.zeros_like(mask)), [0, 0, 0])


def test_weights_follow_exp_formula():
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = torch.tensor([0.1, 0.7])
    expected = [[math.exp(0.9), math.exp(0.7)], [math.exp(0.1), math.exp(0.3)]]
    torch.testing.assert_close(attribute_weights(targets, r), torch.tensor(expected))


def test_weighted_bce_against_formula_with_mask():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 1.5, -2.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    r = [0.2, 0.5, 0.9]
    total, count = 0.0, 0
    per_image = [0.0, 0.0]
    for i in range(2):
        for j in range(3):
            if mask[i, j] == 0:
                continue
            y = float(targets[i, j])
            w = math.exp(1 - r[j]) if y == 1 else math.exp(r[j])
            term = w * _bce(float(logits[i, j]), y)
            total += term
            per_image[i] += term
            count += 1
    loss = weighted_bce_loss(logits, targets, mask, torch.tensor(r))
    assert loss.item() == pytest.approx(total / count, rel=1e-6)
    assert weighted_bce_loss(logits, targets, mask, torch.tensor(r), "sample_sum").item() == pytest.approx(
        sum(per_image) / 2, rel=1e-6)
    # an unknown label's value never matters
    flipped = targets.clone()
    flipped[0, 2] = 0.0
    assert weighted_bce_loss(logits, flipped, mask, torch.tensor(r)).item() == pytest.approx(loss.item())
    # unweighted: plain mean BCE over known labels
    plain = sum(_bce(float(logits[i, j]), float(targets[i, j])) for i in range(2) for j in range(3) if mask[i, j])
    assert weighted_bce_loss(logits, targets, mask).item() == pytest.approx(plain / 5, rel=1e-6)


def test_weighted_bce_gradient_flows_and_is_device_agnostic():
    logits = torch.zeros(3, 2, requires_grad=True)
    loss = weighted_bce_loss(logits, torch.ones(3, 2), None, torch.tensor([0.5, 0.5], dtype=torch.float64))
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad < 0)
    with pytest.raises(ValueError, match="reduction"):
        weighted_bce_loss(logits, torch.ones(3, 2), reduction="sum")


def test_group_cross_entropy_masks_unknown_and_averages_groups():
    logits = torch.tensor([[2.0, 0.0, 1.0, 0.0, 0.0],
                           [0.0, 1.0, 0.0, 3.0, 1.0],
                           [1.0, 1.0, 0.0, 0.0, 5.0]])
    labels = torch.tensor([[0, 2], [1, -1], [-1, -1]])
    slices = [slice(0, 2), slice(2, 5)]

    def ce(row, cols, k):
        z = logits[row, cols]
        return float(torch.logsumexp(z, 0) - z[k])

    g0 = (ce(0, slices[0], 0) + ce(1, slices[0], 1)) / 2
    g1 = ce(0, slices[1], 2)
    assert group_cross_entropy_loss(logits, labels, slices).item() == pytest.approx((g0 + g1) / 2, rel=1e-6)
    none_known = group_cross_entropy_loss(logits.requires_grad_(), torch.full((3, 2), -1), slices)
    assert none_known.item() == 0.0 and none_known.requires_grad


def test_attribute_distillation_against_kl_formula():
    from omnireid.tasks.attributes.losses import attribute_distillation_loss

    torch.manual_seed(0)
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)  # 2 binary + one group of 3
    T = 2.0
    s, t = student / T, teacher / T
    expected_terms = []
    for j in range(2):
        total = 0.0
        for i in range(4):
            p, q = torch.sigmoid(t[i, j]).item(), torch.sigmoid(s[i, j]).item()
            total += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
        expected_terms.append(total / 4)
    pt, ps = torch.softmax(t[:, 2:], 1), torch.softmax(s[:, 2:], 1)
    expected_terms.append(float((pt * (pt / ps).log()).sum(1).mean()))
    expected = sum(expected_terms) / 3 * T * T
    loss = attribute_distillation_loss(student, teacher, 2, [3], T)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert attribute_distillation_loss(teacher, teacher, 2, [3], T).item() == pytest.approx(0.0, abs=1e-6)
    # the gradient pulls the student toward the teacher
    student = student.clone().requires_grad_()
    attribute_distillation_loss(student, teacher, 2, [3], T).backward()
    moved = student.detach() - 0.5 * student.grad
    assert attribute_distillation_loss(moved, teacher, 2, [3], T) < loss
    with pytest.raises(ValueError, match="expected 6"):
        attribute_distillation_loss(student, teacher, 3, [3], T)
