"""Distillation losses against hand/NumPy/SciPy references: JS-div KD, overhaul margins, partial L2."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from omnireid.modeling.distill import (StageFeatureCapture, ema_update_, feature_connector, js_divergence_kd,
                                       overhaul_margins, overhaul_stage_loss, stage_output_norms)


def _js_numpy(student: np.ndarray, teacher: np.ndarray, temperature: float) -> float:
    def softmax(z):
        e = np.exp(z / temperature - (z / temperature).max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = softmax(student), softmax(teacher)
    m = (p + q) / 2
    js = 0.5 * (p * np.log(p / m)).sum(1) + 0.5 * (q * np.log(q / m)).sum(1)
    return float(js.mean() * temperature ** 2)


def test_js_kd_matches_a_hand_computed_case():
    # p = (1/2, 1/2), q = (3/4, 1/4), m = (5/8, 3/8)
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    by_hand = 0.5 * (0.5 * math.log(0.5 / 0.625) + 0.5 * math.log(0.5 / 0.375)) \
        + 0.5 * (0.75 * math.log(0.75 / 0.625) + 0.25 * math.log(0.25 / 0.375))
    assert js_divergence_kd(student, teacher, 1.0).item() == pytest.approx(by_hand, rel=1e-6)
    # Same distributions at T=4 with 4x logits: Hinton's T^2 factor multiplies the value by 16.
    assert js_divergence_kd(4 * student, 4 * teacher, 4.0).item() == pytest.approx(16 * by_hand, rel=1e-6)


def test_js_kd_matches_numpy_on_a_batch_and_is_symmetric():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
    s, t = torch.tensor(student, dtype=torch.float32), torch.tensor(teacher, dtype=torch.float32)
    expected = _js_numpy(student, teacher, 2.5)
    assert js_divergence_kd(s, t, 2.5).item() == pytest.approx(expected, rel=1e-5)
    assert js_divergence_kd(t, s, 2.5).item() == pytest.approx(expected, rel=1e-5)
    assert js_divergence_kd(s, s, 2.5).item() == pytest.approx(0.0, abs=1e-6)
    # bounded by T^2 log 2 even for a confident, opposite teacher
    far = js_divergence_kd(torch.tensor([[100.0, -100.0]]), torch.tensor([[-100.0, 100.0]]), 1.0).item()
    assert far == pytest.approx(math.log(2.0), rel=1e-4)


def test_js_kd_sends_gradients_to_the_student_only():
    student = torch.randn(4, 6, requires_grad=True)
    teacher = torch.randn(4, 6, requires_grad=True)
    js_divergence_kd(student, teacher, 16.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_js_kd_rejects_different_class_sets_and_bad_temperature():
    with pytest.raises(ValueError, match="class set"):
        js_divergence_kd(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="TEMPERATURE"):
        js_divergence_kd(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)


def _negative_conditional_mean(mean: float, std: float) -> float:
    """E[x | x < 0] for x ~ N(mean, std^2) by numerical integration."""
    density = stats.norm(mean, std).pdf
    mass, _ = integrate.quad(density, -np.inf, 0.0)
    first_moment, _ = integrate.quad(lambda x: x * density(x), -np.inf, 0.0)
    return first_moment / mass, mass


@pytest.mark.parametrize("bias,weight", [(0.0, 1.0), (0.5, 0.8), (-1.2, 0.3), (1.0, -0.7), (2.5, 1.0), (-0.02, 0.05)])
def test_overhaul_margin_is_the_mean_of_the_negative_part(bias, weight):
    expected, mass = _negative_conditional_mean(bias, abs(weight))
    assert mass > 1e-3  # the formula branch
    margin = overhaul_margins(torch.tensor([weight]), torch.tensor([bias]))
    assert margin.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert margin.item() < 0


def test_overhaul_margin_falls_back_to_minus_three_sigma_when_negatives_are_rare():
    # bias 4 sigma above zero: P(x < 0) = 3.2e-5 <= 1e-3
    margin = overhaul_margins(torch.tensor([0.5, 2.0]), torch.tensor([2.0, 8.0]))
    assert margin.tolist() == pytest.approx([-1.5, -6.0])


def test_partial_l2_matches_a_brute_force_loop():
    torch.manual_seed(0)
    source, teacher = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    margins = torch.tensor([-0.5, -0.1, -1.0])
    expected = 0.0
    for n, c, h, w in np.ndindex(*source.shape):
        s, t = source[n, c, h, w].item(), max(teacher[n, c, h, w].item(), margins[c].item())
        if s > t or t > 0:
            expected += (s - t) ** 2
    assert overhaul_stage_loss(source, teacher, margins).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="input size"):
        overhaul_stage_loss(source, torch.randn(2, 3, 4, 4), margins)


def test_feature_connector_maps_student_width_to_teacher_width():
    connector = feature_connector(64, 256)
    conv, norm = connector
    assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (256, 64, 1, 1) and conv.bias is None
    assert isinstance(norm, nn.BatchNorm2d) and norm.num_features == 256
    assert connector(torch.randn(2, 64, 5, 3)).shape == (2, 256, 5, 3)
    # He (fan-out) init as in the paper's code: std sqrt(2 / (k*k*out_channels))
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / 256), rel=0.05)


def _resnet(depth: str):
    from omnireid.modeling.backbones.resnet import RESNET_SPECS, ResNet

    return ResNet(RESNET_SPECS[depth], last_stride=1).eval()


def test_stage_capture_returns_the_pre_relu_stage_outputs():
    backbone = _resnet("18x")
    images = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        with StageFeatureCapture(backbone) as capture:
            final = backbone(images)
        # reference: run the stages one by one
        x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(images))))
        stage_outputs = []
        for stage in backbone.stages():
            x = stage(x)
            stage_outputs.append(x)
    features = capture.features
    assert [f.shape[1] for f in features] == [64, 128, 256, 512]
    for pre_relu, post in zip(features, stage_outputs):
        assert (pre_relu < 0).any()  # really before the ReLU
        torch.testing.assert_close(torch.relu(pre_relu), post)
    torch.testing.assert_close(torch.relu(features[-1]), final)
    # hooks are gone after the block
    assert all(not block.out_relu._forward_pre_hooks for block in (s[-1] for s in backbone.stages()))


def test_stage_output_norms_are_the_norms_before_the_final_relu():
    r18, r50 = _resnet("18x"), _resnet("50x")
    assert [n is s[-1].bn2 for n, s in zip(stage_output_norms(r18), r18.stages())] == [True] * 4
    assert [n is s[-1].bn3 for n, s in zip(stage_output_norms(r50), r50.stages())] == [True] * 4


def test_backbone_without_stages_gives_a_clear_error():
    with pytest.raises(TypeError, match="stages"):
        StageFeatureCapture(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_ema_update_follows_its_formula_and_copies_integer_buffers():
    torch.manual_seed(0)
    model, average = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    model.weight.data.normal_()
    model.running_mean.normal_()
    model.num_batches_tracked.fill_(5)
    before = {k: v.clone() for k, v in average.state_dict().items()}
    ema_update_(average, model, 0.9)
    torch.testing.assert_close(average.weight.data, 0.9 * before["weight"] + 0.1 * model.weight.data)
    torch.testing.assert_close(average.running_mean, 0.9 * before["running_mean"] + 0.1 * model.running_mean)
    assert average.num_batches_tracked.item() == 5
    with pytest.raises(ValueError, match="MOMENTUM"):
        ema_update_(average, model, 1.5)
