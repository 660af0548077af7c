"""Baseline meta-architecture and build_model, parametrized over every registered piece."""
from __future__ import annotations

import pytest
import torch

from omnireid.config import get_cfg
from omnireid.modeling import (
    CLASSIFIER_REGISTRY,
    LOSS_REGISTRY,
    META_ARCH_REGISTRY,
    POOLING_REGISTRY,
    build_model,
)
from omnireid.modeling.meta_arch import Baseline
import omnireid.tasks  # noqa: F401,E402  every built-in task's pieces: the parameter lists do not depend on test order

# Losses that read task fields of the batch (``batch_fields``, e.g. attributes) need their task's head and data;
# their task's tests train them (tests/test_attr_task.py).
EMBEDDING_HEAD_LOSSES = [name for name in LOSS_REGISTRY.names(include_aliases=True)
                         if not getattr(LOSS_REGISTRY.get(name), "batch_fields", ())]


def _cfg(*opts):
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.DEVICE", "cpu",
        "MODEL.HEADS.NUM_CLASSES", "4", "MODEL.HEADS.WITH_BNNECK", "True",
        "MODEL.LOSSES.NAME", "['CrossEntropyLoss', 'TripletLoss']", *opts,
    ])
    return cfg


def _batch(n: int = 8, size=(64, 32)):
    g = torch.Generator().manual_seed(0)
    return {
        "images": torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=g),
        "targets": torch.arange(n) // 2 % 4,
        "camids": torch.zeros(n, dtype=torch.long),
        "img_paths": [f"{i}.jpg" for i in range(n)],
    }


@pytest.fixture(scope="module")
def model():
    return build_model(_cfg())


def test_training_returns_configured_weighted_losses(model):
    model.train()
    losses = model(_batch())
    assert set(losses) == {"loss_cls", "loss_triplet"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.conv1.weight.grad is not None
    model.zero_grad()


def test_eval_returns_features_and_input_is_untouched(model):
    model.eval()
    batch = _batch()
    images = batch["images"]
    before = images.clone()
    outputs = model(batch)
    features = outputs["features"]
    assert features.shape == (8, 512) and outputs["logits"].shape == (8, 4)  # named outputs
    assert batch["images"] is images and torch.equal(images, before)
    float_images = before.float()
    float_before = float_images.clone()
    torch.testing.assert_close(model(float_images)["features"], features)  # uint8 and float: same features
    assert torch.equal(float_images, float_before)
    torch.testing.assert_close(model({"images": float_images})["features"], features)


def test_normalisation_is_inside_the_model(model):
    model.eval()
    images = _batch()["images"]
    mean = torch.tensor(get_cfg().MODEL.PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(get_cfg().MODEL.PIXEL_STD).view(1, 3, 1, 1)
    by_hand = model.heads(model.backbone((images.float() - mean) / std))
    torch.testing.assert_close(model(images), by_hand)
    assert "pixel_mean" not in model.state_dict()  # config-owned, not checkpointed


def test_split_api_for_subclasses(model):
    model.eval()
    batch = _batch()
    images = model.preprocess_image(batch)
    targets = model.prepare_targets(batch)
    outputs = model.forward_outputs(images, targets)  # works in eval mode too (teachers)
    assert {"cls_outputs", "pred_class_logits", "features", "neck_features"} <= set(outputs)
    torch.testing.assert_close(outputs["neck_features"], model(batch)["features"])
    torch.testing.assert_close(outputs["pred_class_logits"], model(batch)["logits"])
    model.train()
    torch.manual_seed(0)
    outputs = model.forward_outputs(model.preprocess_image(batch), targets)
    losses = model.losses(outputs, targets)
    assert set(losses) == {"loss_cls", "loss_triplet"}


def test_prepare_targets(model):
    assert model.prepare_targets({"targets": [1, 2]}).dtype == torch.long
    assert torch.equal(model.prepare_targets({"targets": torch.tensor([-1, -1])}), torch.zeros(2, dtype=torch.long))
    with pytest.raises(KeyError, match="targets"):
        model.prepare_targets(torch.zeros(2, 3, 8, 8))


def test_bad_inputs_are_clear_errors(model):
    model.eval()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.zeros(2, 1, 64, 32))
    with pytest.raises(TypeError, match="images"):
        model({"images": [1, 2]})
    cfg = _cfg("MODEL.META_ARCHITECTURE", "Baselin")
    with pytest.raises(ValueError, match="META_ARCHITECTURE.*Baseline"):
        build_model(cfg)


def test_classification_loss_without_num_classes_is_a_clear_error():
    model = build_model(_cfg("MODEL.HEADS.NUM_CLASSES", "0")).train()
    with pytest.raises(KeyError, match="NUM_CLASSES"):
        model(_batch())
    metric_only = build_model(_cfg("MODEL.HEADS.NUM_CLASSES", "0", "MODEL.LOSSES.NAME", "['TripletLoss']")).train()
    assert set(metric_only(_batch())) == {"loss_triplet"}


def test_baseline_is_registered():
    assert META_ARCH_REGISTRY.get("Baseline") is Baseline


# Every registered pooling / classifier / loss builds into a whole model that trains and evaluates.
# 32x32 inputs with LAST_STRIDE 2 give a 1x1 final map, so even Identity/Flatten pooling apply.
@pytest.mark.parametrize("pool", POOLING_REGISTRY.names(include_aliases=True))
def test_build_model_with_every_pooling(pool):
    _train_and_eval(_cfg("MODEL.HEADS.POOL_LAYER", pool, "MODEL.BACKBONE.LAST_STRIDE", "2"))


@pytest.mark.parametrize("cls_layer", CLASSIFIER_REGISTRY.names(include_aliases=True))
def test_build_model_with_every_classifier(cls_layer):
    _train_and_eval(_cfg("MODEL.HEADS.CLS_LAYER", cls_layer, "MODEL.HEADS.SCALE", "16.0",
                         "MODEL.HEADS.MARGIN", "0.2", "MODEL.BACKBONE.LAST_STRIDE", "2"))


@pytest.mark.parametrize("loss", EMBEDDING_HEAD_LOSSES)
def test_build_model_with_every_loss(loss):
    _train_and_eval(_cfg("MODEL.LOSSES.NAME", f"['{loss}']", "MODEL.BACKBONE.LAST_STRIDE", "2"))


def _train_and_eval(cfg) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = _batch(8, size=(32, 32))
    losses = model(batch)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        features = model(batch)["features"]
    assert features.dim() == 2 and features.shape[0] == 8 and torch.isfinite(features).all()


def test_losses_and_margins_are_float32_under_autocast(model):
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(_batch())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    model.zero_grad()
