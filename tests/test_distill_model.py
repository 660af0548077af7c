"""Distiller / DistillerOverhaul as models: soft labels, frozen eval-mode teachers, state, errors."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from omnireid.engine import setup_cfg
from omnireid.modeling import build_model
from omnireid.modeling.meta_arch.distiller import Distiller, DistillerOverhaul
from omnireid.utils.file_io import atomic_torch_save, atomic_write_text

NUM_CLASSES = 5


def model_cfg(*opts: str):
    return setup_cfg(None, [
        "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.DEVICE", "cpu", "MODEL.HEADS.NUM_CLASSES", str(NUM_CLASSES), "MODEL.HEADS.WITH_BNNECK", "True",
        "MODEL.LOSSES.NAME", "['CrossEntropyLoss']", *opts])


def save_teacher(tmp_path, name: str, *opts: str, seed: int = 0) -> tuple[str, str, torch.nn.Module]:
    """A randomly initialised teacher with perturbed BN statistics, saved as a run would save it."""
    torch.manual_seed(seed)
    cfg = model_cfg(*opts)
    teacher = build_model(cfg)
    with torch.no_grad():
        for module in teacher.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
    config_path, weights_path = str(tmp_path / f"{name}.yaml"), str(tmp_path / f"{name}.pth")
    atomic_write_text(config_path, cfg.dump())
    atomic_torch_save({"model": teacher.state_dict(), "iteration": 3}, weights_path)
    return config_path, weights_path, teacher.eval()


def batch(n: int = 8, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randint(0, 256, (n, 3, 32, 16), dtype=torch.uint8, generator=g),
            "targets": torch.arange(n) % NUM_CLASSES, "camids": torch.zeros(n, dtype=torch.long)}


def distiller(teachers: list[tuple[str, str]], *opts: str, arch: str = "Distiller"):
    return build_model(model_cfg("MODEL.META_ARCHITECTURE", arch, "KD.MODEL_CONFIG", str([c for c, _ in teachers]),
                                 "KD.MODEL_WEIGHTS", str([w for _, w in teachers]), *opts))


def _js(p_logits: np.ndarray, q_logits: np.ndarray, t: float) -> float:
    def softmax(z):
        e = np.exp(z / t - (z / t).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    p, q = softmax(p_logits), softmax(q_logits)
    m = (p + q) / 2
    return float((0.5 * (p * np.log(p / m)).sum(1) + 0.5 * (q * np.log(q / m)).sum(1)).mean() * t * t)


def _margin_free_logits(model, images) -> np.ndarray:
    """scale * cos(neck feature, class weight), computed outside the classifier."""
    with torch.no_grad():
        neck = model.forward_outputs(model.preprocess_image(images), None)["neck_features"].double().numpy()
    weight = model.heads.classifier.weight.detach().double().numpy()
    neck /= np.linalg.norm(neck, axis=1, keepdims=True)
    weight /= np.linalg.norm(weight, axis=1, keepdims=True)
    return model.heads.classifier.scale * neck @ weight.T


@pytest.mark.parametrize("cls_layer", ["CircleSoftmax", "ArcSoftmax"])
def test_soft_labels_come_from_margin_free_logits(tmp_path, cls_layer):
    opts = ("MODEL.HEADS.CLS_LAYER", cls_layer, "MODEL.HEADS.SCALE", "16", "MODEL.HEADS.MARGIN", "0.35")
    config, weights, teacher = save_teacher(tmp_path, "t", *opts)
    model = distiller([(config, weights)], *opts, "KD.TEMPERATURE", "4").train()
    data = batch()
    # BN in train mode: the same batch statistics on a second forward, so a student reference is exact.
    loss_kd = model(data)["loss_kd"].item()
    student_train = model.forward_outputs(model.preprocess_image(data), model.prepare_targets(data))
    teacher_logits = _margin_free_logits(teacher, data["images"])
    neck = student_train["neck_features"].detach().double().numpy()
    weight = model.heads.classifier.weight.detach().double().numpy()
    student_logits = 16 * (neck / np.linalg.norm(neck, axis=1, keepdims=True)) @ (
        weight / np.linalg.norm(weight, axis=1, keepdims=True)).T
    assert loss_kd == pytest.approx(_js(student_logits, teacher_logits, 4.0), rel=1e-4)
    with_margin = _js(student_train["cls_outputs"].detach().double().numpy(), teacher_logits, 4.0)
    assert abs(with_margin - loss_kd) > 1e-3 * max(loss_kd, 1e-6)


def test_loss_is_averaged_over_teachers_and_weighted(tmp_path):
    first, second = save_teacher(tmp_path, "a", seed=1), save_teacher(tmp_path, "b", seed=2)
    model = distiller([first[:2], second[:2]], "KD.LOSS_WEIGHT", "0.5", "KD.TEMPERATURE", "2").train()
    data = batch()
    losses = model(data)
    assert set(losses) == {"loss_cls", "loss_kd"}
    student = model.forward_outputs(model.preprocess_image(data), model.prepare_targets(data))
    s = student["pred_class_logits"].detach().double().numpy()
    expected = [_js(s, t.forward_outputs(t.preprocess_image(data))["pred_class_logits"].detach().double().numpy(), 2.0)
                for t in (first[2], second[2])]
    assert losses["loss_kd"].item() == pytest.approx(0.5 * np.mean(expected), rel=1e-4)


def test_teachers_stay_frozen_in_eval_mode_and_out_of_the_state_dict(tmp_path):
    config, weights, _ = save_teacher(tmp_path, "t")
    model = distiller([(config, weights)], arch="DistillerOverhaul")
    (teacher,) = model.teachers
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = model.backbone.conv1.weight.detach().clone()
    model.train()
    assert not any(m.training for m in teacher.modules())
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher_params = {id(p) for p in teacher.parameters()}
    assert not teacher_params & {id(p) for p in model.parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        losses = model(batch(seed=step))
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        model.train()  # as the trainer/evaluation would
    assert not any(m.training for m in teacher.modules())
    for key, value in teacher.state_dict().items():  # weights and BN running statistics
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(model.backbone.conv1.weight, student_before)
    keys = set(model.state_dict())
    assert keys and all(k.split(".")[0] in {"backbone", "heads", "loss_modules", "connectors"} for k in keys)
    # the student keys are exactly a Baseline's: deployment needs no teacher
    baseline_keys = set(build_model(model_cfg()).state_dict())
    assert {k for k in keys if not k.startswith("connectors.")} == baseline_keys


def test_eval_mode_returns_the_student_features(tmp_path):
    config, weights, _ = save_teacher(tmp_path, "t")
    model = distiller([(config, weights)]).eval()
    student = build_model(model_cfg())
    student.load_state_dict(model.state_dict())
    data = batch()
    torch.testing.assert_close(model(data), student.eval()(data))


def test_overhaul_connectors_and_loss(tmp_path):
    config, weights, teacher = save_teacher(tmp_path, "t50", "MODEL.BACKBONE.DEPTH", "50x",
                                            "MODEL.BACKBONE.FEAT_DIM", "2048")
    model = distiller([(config, weights)], "KD.OVERHAUL_WEIGHT", "1.0", arch="DistillerOverhaul").train()
    assert isinstance(model, DistillerOverhaul)
    shapes = [tuple(stage[0].weight.shape) for stage in model.connectors[0]]
    assert shapes == [(256, 64, 1, 1), (512, 128, 1, 1), (1024, 256, 1, 1), (2048, 512, 1, 1)]
    assert [stage[1].num_features for stage in model.connectors[0]] == [256, 512, 1024, 2048]
    losses = model(batch())
    assert set(losses) == {"loss_cls", "loss_kd", "loss_overhaul"}
    assert losses["loss_overhaul"].item() > 0
    losses["loss_overhaul"].backward()
    assert model.connectors[0][0][0].weight.grad.abs().sum() > 0
    assert model.backbone.layer1[0].conv1.weight.grad.abs().sum() > 0


def test_overhaul_weight_and_stage_weights_scale_the_loss(tmp_path):
    config, weights, _ = save_teacher(tmp_path, "t")
    model = distiller([(config, weights)], arch="DistillerOverhaul").train()
    data = batch()
    values = {}
    # train-mode BN: every forward of the same batch sees the same statistics
    for name, stage_weights, overhaul_weight in (("all", (1.0,) * 4, 1.0), ("half", (0.5,) * 4, 1.0),
                                                 ("scaled", (1.0,) * 4, 3.0), ("last", (0.0, 0.0, 0.0, 1.0), 1.0)):
        model.stage_weights, model.overhaul_weight = stage_weights, overhaul_weight
        values[name] = model(data)["loss_overhaul"].item()
    assert values["half"] == pytest.approx(values["all"] / 2, rel=1e-5)
    assert values["scaled"] == pytest.approx(values["all"] * 3, rel=1e-5)
    assert 0 < values["last"] < values["all"]


def test_ema_teacher_is_in_the_state_dict_and_follows_the_student():
    model = build_model(model_cfg("MODEL.META_ARCHITECTURE", "Distiller", "KD.EMA.ENABLED", "True",
                                  "KD.EMA.MOMENTUM", "0.5"))
    assert len(model.teachers) == 1 and model.teachers[0] is model.ema_teacher
    assert any(k.startswith("ema_teacher.backbone.") for k in model.state_dict())
    model.train()
    assert not model.ema_teacher.training
    model.update_ema_teacher(0.0)
    before = model.ema_teacher.backbone.conv1.weight.clone()
    with torch.no_grad():
        model.backbone.conv1.weight.add_(1.0)
    model.update_ema_teacher(0.5)
    torch.testing.assert_close(model.ema_teacher.backbone.conv1.weight, before + 0.5)
    # the engine's ModelCallbacks hook drives these: a copy at a fresh start, nothing on resume, then averaging
    with torch.no_grad():
        model.backbone.conv1.weight.add_(1.0)
    model.on_train_start(start_iter=5)
    torch.testing.assert_close(model.ema_teacher.backbone.conv1.weight, before + 0.5)
    model.on_train_start(start_iter=0)
    torch.testing.assert_close(model.ema_teacher.backbone.conv1.weight, model.backbone.conv1.weight)
    with torch.no_grad():
        model.backbone.conv1.weight.add_(2.0)
    model.on_step_end(iteration=0)
    torch.testing.assert_close(model.ema_teacher.backbone.conv1.weight, model.backbone.conv1.weight - 1.0)


def test_precise_bn_leaves_the_ema_teacher_statistics_alone():
    """PreciseBN re-estimates the student's BatchNorm only: the EMA teacher (eval mode, its statistics
    are averaged from the student's) is not reset to mean 0 / var 1."""
    from omnireid.engine.hooks import update_bn_stats

    torch.manual_seed(0)
    model = build_model(model_cfg("MODEL.META_ARCHITECTURE", "Distiller", "KD.EMA.ENABLED", "True"))
    ema_bn = model.ema_teacher.backbone.bn1
    with torch.no_grad():
        ema_bn.running_mean.uniform_(1.0, 2.0)
        ema_bn.running_var.uniform_(2.0, 3.0)
    ema = {k: v.clone() for k, v in model.ema_teacher.state_dict().items()}
    student_mean = model.backbone.bn1.running_mean.clone()
    gen = torch.Generator().manual_seed(1)
    batches = [{"images": torch.randint(0, 256, (4, 3, 64, 32), generator=gen, dtype=torch.uint8),
                "targets": torch.full((4,), -1)} for _ in range(2)]
    assert update_bn_stats(model, iter(batches), num_iters=2) == 2
    for key, value in model.ema_teacher.state_dict().items():
        assert torch.equal(value, ema[key]), f"ema_teacher.{key} changed"
    assert not torch.equal(model.backbone.bn1.running_mean, student_mean)


def test_configuration_errors_are_clear(tmp_path):
    config, weights, _ = save_teacher(tmp_path, "t")
    with pytest.raises(ValueError, match="needs a teacher"):
        build_model(model_cfg("MODEL.META_ARCHITECTURE", "Distiller"))
    with pytest.raises(ValueError, match="KD.MODEL_WEIGHTS has 0"):
        build_model(model_cfg("MODEL.META_ARCHITECTURE", "Distiller", "KD.MODEL_CONFIG", f"['{config}']"))
    with pytest.raises(ValueError, match="same identities"):
        build_model(model_cfg("MODEL.META_ARCHITECTURE", "Distiller", "KD.MODEL_CONFIG", f"['{config}']",
                              "KD.MODEL_WEIGHTS", f"['{weights}']", "MODEL.HEADS.NUM_CLASSES", "7"))
    with pytest.raises(FileNotFoundError, match=r"KD.MODEL_WEIGHTS\[0\]"):
        distiller([(config, os.path.join(str(tmp_path), "missing.pth"))])
    other_config, _, _ = save_teacher(tmp_path, "t_embedding", "MODEL.HEADS.EMBEDDING_DIM", "128")
    with pytest.raises(ValueError, match="do not belong together"):
        distiller([(other_config, weights)])
    no_classes = str(tmp_path / "no_classes.yaml")
    atomic_write_text(no_classes, model_cfg("MODEL.HEADS.NUM_CLASSES", "0").dump())
    with pytest.raises(ValueError, match="dumped config.yaml"):
        distiller([(no_classes, weights)])
    with pytest.raises(ValueError, match="STAGE_WEIGHTS"):
        distiller([(config, weights)], "KD.STAGE_WEIGHTS", "[1.0]", arch="DistillerOverhaul")
    with pytest.raises(TypeError, match="ResNet-style"):
        build_model(model_cfg("MODEL.META_ARCHITECTURE", "DistillerOverhaul", "KD.EMA.ENABLED", "True",
                              "MODEL.BACKBONE.NAME", "build_mobilenetv2_backbone", "MODEL.BACKBONE.DEPTH", "1.0x",
                              "MODEL.BACKBONE.FEAT_DIM", "1280"))
    assert issubclass(DistillerOverhaul, Distiller)


def test_student_init_and_rng_stream_match_a_run_without_teachers(tmp_path):
    """Teachers and connectors draw from a forked RNG: same seed, same student, same data stream."""
    config, weights, _ = save_teacher(tmp_path, "t")
    torch.manual_seed(3)
    alone = build_model(model_cfg())
    after_alone = torch.rand(4)
    torch.manual_seed(3)
    model = distiller([(config, weights)], arch="DistillerOverhaul")
    torch.testing.assert_close(torch.rand(4), after_alone, rtol=0, atol=0)
    for key, value in alone.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
