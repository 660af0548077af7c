"""EmbeddingHead: outputs in train/eval, BNNeck, NECK_FEAT, embedding conv, classifier wiring."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from omnireid.config import get_cfg
from omnireid.modeling.heads import HEAD_REGISTRY, EmbeddingHead, build_heads


def _head(**kwargs) -> EmbeddingHead:
    options = dict(in_channels=16, num_classes=5)
    options.update(kwargs)
    return EmbeddingHead(**options)


@pytest.fixture
def feature_map():
    return torch.randn(6, 16, 4, 2) + 0.5


def test_training_outputs_without_bnneck(feature_map):
    head = _head(scale=2.0).train()
    out = head(feature_map, torch.tensor([0, 1, 2, 3, 4, 0]))
    pooled = feature_map.mean(dim=(2, 3))
    torch.testing.assert_close(out["features"], pooled)
    torch.testing.assert_close(out["neck_features"], pooled)
    torch.testing.assert_close(out["pred_class_logits"], 2.0 * pooled @ head.classifier.weight.t())
    torch.testing.assert_close(out["cls_outputs"], out["pred_class_logits"])  # Linear has no margin
    head.eval()
    evaluated = head(feature_map)
    assert set(evaluated) == {"features", "logits"}
    torch.testing.assert_close(evaluated["features"], pooled)
    torch.testing.assert_close(evaluated["logits"], out["pred_class_logits"])  # margin-free


def test_bnneck_bias_is_frozen_and_neck_feat_selects_the_metric_feature(feature_map):
    for neck_feat in ("before", "after"):
        head = _head(with_bnneck=True, neck_feat=neck_feat).train()
        bn = head.bottleneck[0]
        assert isinstance(bn, nn.BatchNorm2d)
        assert not bn.bias.requires_grad and torch.all(bn.bias == 0) and torch.all(bn.weight == 1)
        assert bn.weight.requires_grad
        out = head(feature_map, torch.zeros(6, dtype=torch.long))
        pooled = feature_map.mean(dim=(2, 3))
        mean, var = pooled.mean(0), pooled.var(0, unbiased=False)
        normalised = (pooled - mean) / torch.sqrt(var + bn.eps)  # training BN with weight 1, bias 0
        torch.testing.assert_close(out["neck_features"], normalised)
        torch.testing.assert_close(out["features"], pooled if neck_feat == "before" else normalised)
        torch.testing.assert_close(out["pred_class_logits"], normalised @ head.classifier.weight.t())


def test_bnneck_bias_stays_zero_after_training_steps(feature_map):
    head = _head(with_bnneck=True).train()
    optimizer = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        out = head(feature_map, torch.tensor([0, 1, 2, 3, 4, 0]))
        nn.functional.cross_entropy(out["cls_outputs"], torch.tensor([0, 1, 2, 3, 4, 0])).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.all(head.bottleneck[0].bias == 0)


def test_eval_returns_the_neck_feature_with_running_statistics(feature_map):
    head = _head(with_bnneck=True, neck_feat="before")
    bn = head.bottleneck[0]
    with torch.no_grad():
        bn.running_mean.fill_(0.25)
        bn.running_var.fill_(4.0)
    head.eval()
    expected = (feature_map.mean(dim=(2, 3)) - 0.25) / torch.sqrt(torch.tensor(4.0) + bn.eps)
    torch.testing.assert_close(head(feature_map)["features"], expected)


def test_embedding_conv(feature_map):
    head = _head(embedding_dim=8, with_bnneck=True).eval()
    conv = head.bottleneck[0]
    assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (8, 16, 1, 1) and conv.bias is None
    assert head.classifier.weight.shape == (5, 8)
    assert head(feature_map)["features"].shape == (6, 8)


def test_margin_logits_and_margin_free_logits(feature_map):
    head = _head(cls_layer="CosSoftmax", scale=10.0, margin=0.3).train()
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    out = head(feature_map, targets)
    cos = nn.functional.normalize(out["neck_features"]) @ nn.functional.normalize(head.classifier.weight).t()
    torch.testing.assert_close(out["pred_class_logits"], 10.0 * cos)
    expected = 10.0 * (cos - 0.3 * nn.functional.one_hot(targets, 5))
    torch.testing.assert_close(out["cls_outputs"], expected)


def test_compute_outputs_works_in_eval_mode_and_without_targets(feature_map):
    head = _head(cls_layer="ArcSoftmax", scale=4.0, margin=0.2).eval()
    out = head.compute_outputs(feature_map)
    torch.testing.assert_close(out["cls_outputs"], out["pred_class_logits"])
    evaluated = head(feature_map)
    torch.testing.assert_close(out["neck_features"], evaluated["features"])
    torch.testing.assert_close(out["pred_class_logits"], evaluated["logits"])  # eval logits carry no margin


def test_head_without_classes_has_no_classifier(feature_map):
    head = _head(num_classes=0).train()
    out = head(feature_map)
    assert head.classifier is None and set(out) == {"features", "neck_features"}


def test_from_config_reads_fastreid_keys():
    cfg = get_cfg()
    h = cfg.MODEL.HEADS
    h.NUM_CLASSES, h.EMBEDDING_DIM, h.WITH_BNNECK, h.NECK_FEAT = 7, 32, True, "after"
    h.POOL_LAYER, h.CLS_LAYER, h.SCALE, h.MARGIN = "gempoolP", "circleSoftmax", 64.0, 0.35
    head = build_heads(cfg, in_channels=64)
    assert type(head.pool_layer).__name__ == "GeneralizedMeanPoolingP"
    assert type(head.classifier).__name__ == "CircleSoftmax"
    assert head.classifier.scale == 64.0 and head.classifier.margin == 0.35
    assert head.classifier.weight.shape == (7, 32) and head.neck_feat == "after"
    cfg.MODEL.BACKBONE.FEAT_DIM = 48
    assert build_heads(cfg).in_channels == 48  # no backbone given: FEAT_DIM


def test_head_errors(feature_map):
    with pytest.raises(ValueError, match="NECK_FEAT"):
        _head(neck_feat="middle")
    head = _head(pool_layer="Identity")
    with pytest.raises(ValueError, match="POOL_LAYER"):
        head(feature_map)  # a 4x2 map is not a vector
    cfg = get_cfg()
    cfg.MODEL.HEADS.NAME = "EmbedingHead"
    with pytest.raises(ValueError, match="HEADS.NAME.*EmbeddingHead"):
        build_heads(cfg)
    assert "EmbeddingHead" in HEAD_REGISTRY


def test_named_outputs_selects_outputs_and_restricts_the_work(feature_map):
    import copy

    from omnireid.modeling import NamedOutputs

    head = _head().eval()
    full = head(feature_map)
    features, logits = NamedOutputs(copy.deepcopy(head), ("features", "logits"))(feature_map)
    torch.testing.assert_close(features, full["features"])
    torch.testing.assert_close(logits, full["logits"])
    embedding_only = NamedOutputs(copy.deepcopy(head))
    torch.testing.assert_close(embedding_only(feature_map), full["features"])
    assert embedding_only.model(feature_map).keys() == {"features"}  # no classifier work in a deployed graph
    with pytest.raises(KeyError, match="no output \\['attributes'\\]"):
        NamedOutputs(head, ("attributes",))(feature_map)
