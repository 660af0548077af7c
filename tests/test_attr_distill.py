"""Attribute distillation: a student built from a saved attribute teacher learns its attribute logits."""
import pytest
import torch

import omnireid.tasks  # noqa: F401  (registers the attribute task)
from omnireid.config import setup_cfg
from omnireid.modeling import build_model

OPTS = ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.HEADS.NUM_CLASSES", "3", "MODEL.HEADS.NUM_ATTRIBUTES", "2", "MODEL.HEADS.ATTRIBUTE_GROUPS", "[3]",
        "MODEL.LOSSES.BCE.POS_RATIO", "[0.25, 0.5]", "MODEL.DEVICE", "cpu",
        "MODEL.LOSSES.NAME", "['CrossEntropyLoss', 'BinaryCrossEntropyLoss', 'GroupCrossEntropyLoss']"]


def _batch():
    torch.manual_seed(1)
    return {"images": torch.randint(0, 255, (4, 3, 32, 16), dtype=torch.uint8), "targets": torch.tensor([0, 1, 2, 0]),
            "attributes": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]),
            "attribute_mask": torch.ones(4, 2), "attribute_groups": torch.tensor([[0], [1], [2], [-1]])}


@pytest.fixture
def teacher_files(tmp_path):
    cfg = setup_cfg("configs/Attribute/Base-attribute.yml", OPTS)
    torch.manual_seed(0)
    teacher = build_model(cfg)
    (tmp_path / "config.yaml").write_text(cfg.dump())
    torch.save({"model": teacher.state_dict()}, tmp_path / "teacher.pth")
    return str(tmp_path / "config.yaml"), str(tmp_path / "teacher.pth"), teacher


def _student(teacher_files, *extra):
    config, weights, _ = teacher_files
    cfg = setup_cfg("configs/Attribute/Base-attribute.yml", OPTS + [
        "MODEL.META_ARCHITECTURE", "AttributeDistiller", "KD.MODEL_CONFIG", f"['{config}']",
        "KD.MODEL_WEIGHTS", f"['{weights}']", "KD.TEMPERATURE", "2.0", *extra])
    torch.manual_seed(5)
    return build_model(cfg)


def test_attribute_kd_term_is_zero_for_the_teachers_weights_and_trains_the_student(teacher_files):
    student = _student(teacher_files).train()
    losses = student(_batch())
    assert {"loss_bce", "loss_attr_groups", "loss_cls", "loss_attr_kd", "loss_kd"} <= set(losses)
    assert losses["loss_attr_kd"].item() > 0
    # a student that *is* the teacher has nothing left to learn from it (BN in eval on both sides)
    same = _student(teacher_files)
    same.load_state_dict(teacher_files[2].state_dict(), strict=False)
    same.eval()
    images = same.preprocess_image(_batch())
    student_out = same.forward_outputs(images, _batch()["targets"])
    teacher_out = same.teacher_outputs(same.teachers[0], _batch(), _batch()["targets"])
    assert same.distillation_losses(student_out, [teacher_out])["loss_attr_kd"].item() == pytest.approx(0, abs=1e-6)
    # a few steps on the KD term alone bring the student's attribute logits to the teacher's
    student = _student(teacher_files, "MODEL.LOSSES.NAME", "['BinaryCrossEntropyLoss']", "MODEL.LOSSES.BCE.SCALE", "0.0")
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-3)
    first = None
    for _ in range(8):
        loss = student(_batch())["loss_attr_kd"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.7 * first
    student.eval()
    assert student(_batch())["attributes"].shape == (4, 5)
