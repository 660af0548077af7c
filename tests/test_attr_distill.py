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


def test_attribute_kd_matches_its_formula_on_a_hand_computed_case():
    """One image, one binary attribute and one 2-class group, T = 2: the teacher's logits are
    chosen so that at T its sigmoid is 0.75 and its group softmax (0.8, 0.2); the student's are 0
    (0.5 everywhere). Bernoulli KL = 0.75 ln 1.5 + 0.25 ln 0.5; softmax KL = 0.8 ln 1.6 + 0.2 ln 0.4;
    the loss is their mean times T^2 = 4."""
    import math

    from omnireid.tasks.attributes.losses import attribute_distillation_loss

    teacher = torch.tensor([[2 * math.log(3.0), 2 * math.log(4.0), 0.0]])
    student = torch.zeros(1, 3, requires_grad=True)
    expected = 4 * ((0.75 * math.log(1.5) + 0.25 * math.log(0.5)) + (0.8 * math.log(1.6) + 0.2 * math.log(0.4))) / 2
    loss = attribute_distillation_loss(student, teacher, num_binary=1, group_sizes=[2], temperature=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # the binary term is the BCE on the teacher's sigmoid minus its entropy: same gradient, zero at the optimum;
    # d/ds of 4 * mean(...) at s = 0: binary (0.5 - 0.75) / 2 * 4 / 2, group (0.5 - 0.8, 0.5 - 0.2) / 2 * 4 / 2
    loss.backward()
    torch.testing.assert_close(student.grad, torch.tensor([[-0.25, -0.3, 0.3]]))


def _attribute_only_cfg(*extra):
    """An attribute model with no identity classifier and no identity loss (PA-100K-like data)."""
    opts = [o for o in OPTS]
    opts[opts.index("MODEL.HEADS.NUM_CLASSES") + 1] = "0"
    opts[opts.index("MODEL.LOSSES.NAME") + 1] = "['BinaryCrossEntropyLoss', 'GroupCrossEntropyLoss']"
    return setup_cfg("configs/Attribute/Base-attribute.yml", opts + list(extra))


def test_attribute_only_teacher_teaches_an_attribute_only_student(tmp_path):
    cfg = _attribute_only_cfg()
    torch.manual_seed(0)
    teacher = build_model(cfg)
    (tmp_path / "config.yaml").write_text(cfg.dump())
    torch.save({"model": teacher.state_dict()}, tmp_path / "teacher.pth")
    kd = ["MODEL.META_ARCHITECTURE", "AttributeDistiller", "KD.MODEL_CONFIG", f"['{tmp_path / 'config.yaml'}']",
          "KD.MODEL_WEIGHTS", f"['{tmp_path / 'teacher.pth'}']", "KD.TEMPERATURE", "2.0"]
    torch.manual_seed(5)
    student = build_model(_attribute_only_cfg(*kd)).train()
    assert not student.identity_kd
    batch = {k: v for k, v in _batch().items() if k != "targets"}  # attribute data has no identities
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(8):
        losses = student(batch)
        assert set(losses) == {"loss_bce", "loss_attr_groups", "loss_attr_kd"}
        history.append(losses["loss_attr_kd"].item())
        optimizer.zero_grad()
        losses["loss_attr_kd"].backward()
        optimizer.step()
    assert history[-1] < 0.7 * history[0]
    # a joint student (identity CE) with an attribute-only teacher: attribute KD only, no identity KD
    joint = build_model(setup_cfg("configs/Attribute/Base-attribute.yml", OPTS + kd)).train()
    assert not joint.identity_kd and "loss_kd" not in joint(_batch()) and "loss_cls" in joint(_batch())


def test_a_teacher_of_other_attributes_is_refused(tmp_path):
    from omnireid.utils.errors import ConfigError

    cfg = _attribute_only_cfg("MODEL.HEADS.ATTRIBUTE_GROUPS", "[4]")
    (tmp_path / "config.yaml").write_text(cfg.dump())
    torch.save({"model": build_model(cfg).state_dict()}, tmp_path / "teacher.pth")
    kd = ["MODEL.META_ARCHITECTURE", "AttributeDistiller", "KD.MODEL_CONFIG", f"['{tmp_path / 'config.yaml'}']",
          "KD.MODEL_WEIGHTS", f"['{tmp_path / 'teacher.pth'}']"]
    with pytest.raises(ConfigError, match=r"groups \[4\], the student 2 and \[3\].*same attributes"):
        build_model(_attribute_only_cfg(*kd))
