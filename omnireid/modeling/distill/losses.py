"""Distillation losses: logit KD (Jensen-Shannon, Hinton's temperature) and overhaul features.

References: Hinton et al., "Distilling the Knowledge in a Neural Network" (2015) for the
temperature and its T^2 gradient scaling; Heo et al., "A Comprehensive Overhaul of Feature
Distillation" (ICCV 2019) for margin ReLU, partial L2 and 1x1 conv + BN connectors.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Below this probability of a negative response the conditional mean is numerically unreliable;
# the paper's implementation then uses -3 sigma (Heo et al., official code).
_MIN_NEGATIVE_MASS = 1e-3


def js_divergence_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """``T^2 * mean_batch JS(p_s || p_t)`` with ``p = softmax(logits / T)``.

    ``JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2`` (natural log). It is
    symmetric and bounded by ``log 2``, so a confident wrong teacher cannot blow the loss up. The
    teacher side is detached: gradients reach the student only. Computed in float32.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: teachers and student must share the class set")
    if temperature <= 0:
        raise ValueError(f"KD.TEMPERATURE must be positive, got {temperature}")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    log_m = torch.logsumexp(torch.stack([log_p_s, log_p_t]), dim=0) - math.log(2.0)
    kl_s = (log_p_s.exp() * (log_p_s - log_m)).sum(dim=1)
    kl_t = (log_p_t.exp() * (log_p_t - log_m)).sum(dim=1)
    return 0.5 * (kl_s + kl_t).mean() * temperature ** 2


def overhaul_margins(bn_weight: torch.Tensor, bn_bias: torch.Tensor) -> torch.Tensor:
    """Per-channel margin ``E[x | x < 0]`` for ``x ~ N(bias, |weight|^2)`` (Heo et al., eq. 3).

    ``m - s * phi(m/s) / Phi(-m/s)`` with ``m = bias``, ``s = |weight|``; where the negative mass
    ``Phi(-m/s)`` is at most 1e-3 the paper's code uses ``-3 s`` instead. The BN before the
    block's final ReLU sets the response distribution, hence its affine parameters.
    """
    mean = bn_bias.detach().double()
    std = bn_weight.detach().double().abs().clamp_min(1e-12)
    z = mean / std
    negative_mass = torch.special.ndtr(-z)
    density = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    conditional_mean = mean - std * density / negative_mass.clamp_min(_MIN_NEGATIVE_MASS)
    margins = torch.where(negative_mass > _MIN_NEGATIVE_MASS, conditional_mean, -3.0 * std)
    return margins.to(bn_weight.dtype)


def overhaul_stage_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor,
                        margins: torch.Tensor) -> torch.Tensor:
    """Sum of the partial L2 distance between a connected student map and the margin-ReLU'd teacher.

    The teacher target is ``max(t, margin)``; a position contributes unless the student is already
    below a non-positive target (the ReLU would erase the difference anyway).
    """
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(f"connected student feature {tuple(student_feature.shape)} and teacher feature "
                         f"{tuple(teacher_feature.shape)} differ (input size / strides of the two backbones?)")
    target = torch.maximum(teacher_feature.detach().float(), margins.float().view(1, -1, 1, 1))
    source = student_feature.float()
    mask = (source > target) | (target > 0)
    return ((source - target).pow(2) * mask).sum()


def feature_connector(student_channels: int, teacher_channels: int) -> nn.Sequential:
    """1x1 conv + BN mapping a student stage to the teacher's width (He fan-out init, BN identity)."""
    conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    norm = nn.BatchNorm2d(teacher_channels)
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)
    return nn.Sequential(conv, norm)
