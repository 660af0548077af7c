"""Norms, IBN-a, SE, non-local, poolings and classifiers against their formulas."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from omnireid.modeling.layers import (
    CLASSIFIER_REGISTRY,
    IBN,
    NORM_REGISTRY,
    POOLING_REGISTRY,
    ArcSoftmax,
    CircleSoftmax,
    CosSoftmax,
    Linear,
    NonLocal,
    SELayer,
    build_classifier,
    build_pooling,
    get_norm,
)


def _randomise_affine(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


# ------------------------------------------------------------------------------------------ norms
@pytest.mark.parametrize("name", NORM_REGISTRY.names(include_aliases=True))
def test_every_norm_builds_and_normalises(name):
    layer = get_norm(name, 64)
    out = layer(torch.randn(4, 64, 3, 2))
    assert out.shape == (4, 64, 3, 2)


def test_norm_init_and_freeze():
    bn = get_norm("BN", 8, weight_init=0.5, bias_init=0.25, bias_freeze=True)
    assert torch.all(bn.weight == 0.5) and torch.all(bn.bias == 0.25)
    assert bn.weight.requires_grad and not bn.bias.requires_grad


def test_sync_bn_is_plain_bn_without_distributed_cuda():
    assert type(get_norm("syncBN", 4)) is nn.BatchNorm2d


def test_group_norm_groups_divide_channels():
    assert get_norm("GN", 64).num_groups == 32
    assert get_norm("GN", 48).num_groups == 16


def test_unknown_norm_names_the_choices():
    with pytest.raises(ValueError, match=r"NORM.*BN"):
        get_norm("BatchNorm", 4)


# -------------------------------------------------------------------------------------------- IBN
@pytest.mark.parametrize("channels", [6, 7])
def test_ibn_a_matches_manual_instance_and_batch_norm(channels):
    ibn = IBN(channels)
    _randomise_affine(ibn)
    x = torch.randn(4, channels, 5, 3, dtype=torch.float64)
    ibn = ibn.double().train()
    out = ibn(x)
    half = channels // 2
    assert ibn.IN.num_features == half and ibn.BN.num_features == channels - half
    eps = 1e-5
    # instance norm: statistics per sample and channel over H, W
    first = x[:, :half]
    mean = first.mean(dim=(2, 3), keepdim=True)
    var = first.var(dim=(2, 3), unbiased=False, keepdim=True)
    ref_in = (first - mean) / torch.sqrt(var + eps) * ibn.IN.weight.view(1, -1, 1, 1) + ibn.IN.bias.view(1, -1, 1, 1)
    # batch norm (training): statistics per channel over N, H, W
    second = x[:, half:]
    mean = second.mean(dim=(0, 2, 3), keepdim=True)
    var = second.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    ref_bn = (second - mean) / torch.sqrt(var + eps) * ibn.BN.weight.view(1, -1, 1, 1) + ibn.BN.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(out, torch.cat([ref_in, ref_bn], dim=1))


def test_ibn_does_not_modify_its_input():
    x = torch.randn(2, 4, 3, 3)
    before = x.clone()
    IBN(4)(x)
    assert torch.equal(x, before)


# --------------------------------------------------------------------------------------------- SE
def test_se_layer_matches_formula():
    se = SELayer(8, reduction=4)
    x = torch.randn(3, 8, 4, 2)
    out = se(x)
    w1, w2 = se.fc[0].weight, se.fc[2].weight
    assert w1.shape == (2, 8) and w2.shape == (8, 2)
    squeeze = x.mean(dim=(2, 3))
    gate = torch.sigmoid(torch.relu(squeeze @ w1.t()) @ w2.t())
    torch.testing.assert_close(out, x * gate[:, :, None, None])


# -------------------------------------------------------------------------------------- non-local
def test_non_local_is_identity_at_initialisation():
    block = NonLocal(8)
    x = torch.randn(2, 8, 4, 3)
    assert torch.equal(block(x), x)
    assert torch.all(block.W[1].weight == 0) and torch.all(block.W[1].bias == 0)


@pytest.mark.parametrize("embedded_gaussian", [True, False])
def test_non_local_matches_loop_reference(embedded_gaussian):
    torch.manual_seed(0)
    block = NonLocal(6, embedded_gaussian=embedded_gaussian).double().eval()
    with torch.no_grad():  # make W's norm a non-trivial affine map so the block is not the identity
        block.W[1].weight.uniform_(0.5, 1.5)
        block.W[1].bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 3, 2, dtype=torch.float64)
    out = block(x)
    for n in range(2):
        positions = [(i, j) for i in range(3) for j in range(2)]
        theta = [block.theta(x[n:n + 1])[0, :, i, j] for i, j in positions]
        phi = [block.phi(x[n:n + 1])[0, :, i, j] for i, j in positions]
        g = [block.g(x[n:n + 1])[0, :, i, j] for i, j in positions]
        ys = []
        for a in range(len(positions)):
            scores = torch.stack([theta[a] @ phi[b] for b in range(len(positions))])
            weights = torch.softmax(scores, 0) if embedded_gaussian else scores / len(positions)
            ys.append(sum(w * g[b] for b, w in enumerate(weights)))
        y = torch.stack(ys, dim=1).view(1, -1, 3, 2)
        torch.testing.assert_close(out[n:n + 1], x[n:n + 1] + block.W(y))


# ---------------------------------------------------------------------------------------- pooling
@pytest.fixture
def feature_map():
    return torch.rand(2, 3, 4, 5, dtype=torch.float64) * 2 - 0.5  # some negatives for the clamp paths


def test_pooling_values_against_formulas(feature_map):
    x = feature_map
    flat = x.flatten(2)
    torch.testing.assert_close(build_pooling("GlobalAvgPool")(x)[..., 0, 0], flat.mean(-1))
    torch.testing.assert_close(build_pooling("GlobalMaxPool")(x)[..., 0, 0], flat.max(-1).values)
    torch.testing.assert_close(build_pooling("AdaptiveAvgMaxPool")(x)[..., 0, 0], flat.mean(-1) + flat.max(-1).values)
    torch.testing.assert_close(build_pooling("ClipGlobalAvgPool")(x)[..., 0, 0], flat.mean(-1).clamp(0, 1))
    torch.testing.assert_close(build_pooling("Flatten")(x), x.reshape(2, 60, 1, 1))
    assert build_pooling("Identity")(x) is x
    # GeM with p = 3, by loops: (mean(max(x, eps)^3))^(1/3)
    gem = build_pooling("GeneralizedMeanPooling")(x)
    for n in range(2):
        for c in range(3):
            values = [max(v, 1e-6) ** 3 for v in x[n, c].flatten().tolist()]
            assert gem[n, c, 0, 0].item() == pytest.approx((sum(values) / len(values)) ** (1 / 3), rel=1e-9)


def test_gem_limits_and_learnable_p(feature_map):
    x = feature_map.clamp(min=0.1)
    torch.testing.assert_close(type(build_pooling("gempool"))(p=1.0)(x), x.mean(dim=(2, 3), keepdim=True))
    big_p = type(build_pooling("gempool"))(p=200.0)(x)
    torch.testing.assert_close(big_p, x.amax(dim=(2, 3), keepdim=True), rtol=0.05, atol=0)
    learnable = build_pooling("gempoolP").double()
    assert isinstance(learnable.p, nn.Parameter) and learnable.p.item() == 3.0
    torch.testing.assert_close(learnable(x), build_pooling("gempool")(x))
    learnable(x).sum().backward()
    assert learnable.p.grad is not None and learnable.p.grad.abs().item() > 0


@pytest.mark.parametrize("alias,name", [("avgpool", "GlobalAvgPool"), ("FastGlobalAvgPool", "GlobalAvgPool"),
                                        ("maxpool", "GlobalMaxPool"), ("gempool", "GeneralizedMeanPooling"),
                                        ("gempoolP", "GeneralizedMeanPoolingP"), ("avgmaxpool", "AdaptiveAvgMaxPool")])
def test_fastreid_pooling_aliases(alias, name):
    assert POOLING_REGISTRY.get(alias) is POOLING_REGISTRY.get(name)


@pytest.mark.parametrize("name", POOLING_REGISTRY.names(include_aliases=True))
def test_every_pooling_maps_a_vector_map_to_itself_shape(name):
    x = torch.rand(2, 5, 1, 1)
    assert build_pooling(name)(x).shape == (2, 5, 1, 1)


def test_unknown_pooling_names_the_key():
    with pytest.raises(ValueError, match="POOL_LAYER.*gempool"):
        build_pooling("gempol")


# ------------------------------------------------------------------------------------ classifiers
S, M = 16.0, 0.35


@pytest.fixture
def classifier_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 4, generator=g, dtype=torch.float64), torch.tensor([0, 2, 1, 2, -1])


def _cosines(features, weight):
    return [[sum(a * b for a, b in zip(f, w)) / (math.sqrt(sum(a * a for a in f)) * math.sqrt(sum(b * b for b in w)))
             for w in weight.tolist()] for f in features.tolist()]


def test_linear_classifier(classifier_inputs):
    x, t = classifier_inputs
    clf = build_classifier("Linear", 4, 3, scale=2.0, margin=M).double()
    expected = 2.0 * x @ clf.weight.t()
    torch.testing.assert_close(clf(x, t), expected)
    torch.testing.assert_close(clf.margin_free_logits(x), expected)


def test_classifier_weight_init_is_small_normal():
    weight = Linear(256, 512).weight
    assert abs(weight.std().item() - 0.01) < 0.001 and abs(weight.mean().item()) < 0.001


def test_cos_softmax_matches_formula(classifier_inputs):
    x, t = classifier_inputs
    clf = build_classifier("CosSoftmax", 4, 3, scale=S, margin=M).double()
    cos = _cosines(x, clf.weight.detach())
    expected = [[S * (c - M) if k == y else S * c for k, c in enumerate(row)] for row, y in zip(cos, t.tolist())]
    torch.testing.assert_close(clf(x, t), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(clf.margin_free_logits(x), S * torch.tensor(cos, dtype=torch.float64))


def _arc_reference(cos, targets, easy_margin):
    out = []
    for row, y in zip(cos, targets):
        new_row = []
        for k, c in enumerate(row):
            if k != y:
                new_row.append(S * c)
                continue
            theta = math.acos(c)
            if easy_margin:
                new_row.append(S * (math.cos(theta + M) if c > 0 else c))
            elif theta + M < math.pi:
                new_row.append(S * math.cos(theta + M))
            else:  # past π cos(θ+m) would increase again: FastReID's linear fallback
                new_row.append(S * (c - M * math.sin(M)))
        out.append(new_row)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("easy_margin", [False, True])
def test_arc_softmax_matches_formula(classifier_inputs, easy_margin):
    x, t = classifier_inputs
    clf = ArcSoftmax(4, 3, scale=S, margin=M, easy_margin=easy_margin).double()
    # sample 3 points almost opposite to its target class: θ + m > π exercises the fallback
    with torch.no_grad():
        x[3] = -clf.weight[2] + 1e-3
    cos = _cosines(x, clf.weight.detach())
    assert cos[3][2] < math.cos(math.pi - M)
    torch.testing.assert_close(clf(x, t), _arc_reference(cos, t.tolist(), easy_margin))
    torch.testing.assert_close(clf.margin_free_logits(x), S * torch.tensor(cos, dtype=torch.float64))


def _combined_reference(cos, targets, m1, m2, m3):
    """cos(m1 θ + m2) - m3 at the target, continued monotonically past m1 θ + m2 = π (see the class)."""
    out = []
    for row, y in zip(cos, targets):
        new_row = []
        for k, c in enumerate(row):
            theta = math.acos(c)
            if k != y:
                new_row.append(S * c)
            elif m1 * theta + m2 <= math.pi:
                new_row.append(S * (math.cos(m1 * theta + m2) - m3))
            elif m1 == 1:
                new_row.append(S * (c - m2 * math.sin(m2) - m3))
            else:
                new_row.append(S * (c - 1 - math.cos((math.pi - m2) / m1) - m3))
        out.append(new_row)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("m1,m2,m3", [(1.0, 0.5, 0.0), (1.0, 0.0, 0.35), (1.0, 0.3, 0.2), (1.35, 0.0, 0.0),
                                      (2.0, 0.2, 0.1)])
def test_combined_margin_matches_formula(classifier_inputs, m1, m2, m3):
    x, t = classifier_inputs
    clf = build_classifier("CombinedMarginSoftmax", 4, 3, scale=S, margin=m2, m1=m1, m3=m3).double()
    with torch.no_grad():
        x[3] = -clf.weight[2] + 1e-3  # θ near π: the monotone continuation
    cos = _cosines(x, clf.weight.detach())
    torch.testing.assert_close(clf(x, t), _combined_reference(cos, t.tolist(), m1, m2, m3))
    torch.testing.assert_close(clf.margin_free_logits(x), S * torch.tensor(cos, dtype=torch.float64))


def test_combined_margin_special_cases_equal_arcface_and_cosface(classifier_inputs):
    x, t = classifier_inputs
    combined = build_classifier("CombinedMarginSoftmax", 4, 3, scale=S, margin=M).double()
    arc = ArcSoftmax(4, 3, scale=S, margin=M).double()
    arc.weight = combined.weight
    torch.testing.assert_close(combined(x, t), arc(x, t), rtol=0, atol=0)
    cos_combined = build_classifier("CombinedMarginSoftmax", 4, 3, scale=S, margin=0.0, m3=M).double()
    cosface = CosSoftmax(4, 3, scale=S, margin=M).double()
    cosface.weight = cos_combined.weight
    torch.testing.assert_close(cos_combined(x, t), cosface(x, t))


def test_margins_a_classifier_cannot_apply_are_an_error():
    with pytest.raises(ValueError, match="ArcSoftmax.*m3"):
        build_classifier("ArcSoftmax", 4, 3, scale=S, margin=M, m1=1.0, m3=0.2)
    build_classifier("ArcSoftmax", 4, 3, scale=S, margin=M, m1=1.0, m3=0.0)  # neutral values are fine


def test_circle_softmax_matches_formula(classifier_inputs):
    x, t = classifier_inputs
    clf = build_classifier("CircleSoftmax", 4, 3, scale=S, margin=M).double()
    cos = _cosines(x, clf.weight.detach())
    expected = []
    for row, y in zip(cos, t.tolist()):
        expected.append([S * max(1 + M - c, 0) * (c - (1 - M)) if k == y else S * max(c + M, 0) * (c - M)
                         for k, c in enumerate(row)])
    torch.testing.assert_close(clf(x, t), torch.tensor(expected, dtype=torch.float64))


_NO_TARGET_ROW = {
    "Linear": lambda c, s, m: c * s,
    "CosSoftmax": lambda c, s, m: c * s,
    "ArcSoftmax": lambda c, s, m: c * s,
    "CombinedMarginSoftmax": lambda c, s, m: c * s,
    "CircleSoftmax": lambda c, s, m: s * (c + m).clamp(min=0) * (c - m),  # every class is a negative
}


@pytest.mark.parametrize("name", CLASSIFIER_REGISTRY.names(include_aliases=True))
def test_every_classifier_keeps_margin_free_logits_and_inputs(name, classifier_inputs):
    x, t = classifier_inputs
    clf = build_classifier(name, 4, 3, scale=S, margin=M).double()
    x_before = x.clone()
    base = clf.base_logits(x)
    base_before = base.clone()
    with_margin = clf.apply_margin(base, t)
    assert torch.equal(base, base_before) and torch.equal(x, x_before)  # nothing modified in place
    torch.testing.assert_close(clf(x), base * clf.scale)  # no targets: margin-free
    no_target_row = _NO_TARGET_ROW.get(CLASSIFIER_REGISTRY.canonical_name(name))
    if no_target_row is not None:  # target -1 ("no class here"): no target margin in that row
        torch.testing.assert_close(with_margin[4], no_target_row(base[4], clf.scale, clf.margin))
    with_margin.sum().backward()
    assert clf.weight.grad is not None


@pytest.mark.parametrize("alias,name", [("linear", "Linear"), ("arcSoftmax", "ArcSoftmax"),
                                        ("cosSoftmax", "CosSoftmax"), ("circleSoftmax", "CircleSoftmax")])
def test_fastreid_classifier_aliases(alias, name):
    assert CLASSIFIER_REGISTRY.get(alias) is CLASSIFIER_REGISTRY.get(name)


def test_classifier_target_out_of_range_is_a_clear_error(classifier_inputs):
    x, _ = classifier_inputs
    clf = CosSoftmax(4, 3, scale=S, margin=M).double()
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        clf(x, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="CLS_LAYER"):
        build_classifier("ArcFaceX", 4, 3, 1.0, 0.0)
    with pytest.raises(ValueError, match="num_classes"):
        CircleSoftmax(4, 0)
