"""Distillation through the real Trainer: teacher run -> Distiller / DistillerOverhaul / EMA runs."""
from __future__ import annotations

import json
import os

import pytest
import torch

from omnireid.engine import Trainer, default_setup
from omnireid.engine.hooks import HookBase
from omnireid.utils.file_io import load_checkpoint_file

from conftest import tiny_reid_cfg

FAST = ("SOLVER.MAX_ITER", "3", "TEST.EVAL_PERIOD", "0", "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]")


def run(cfg, resume: bool = False, hooks=()) -> tuple[int, int]:
    """Train; returns ``(max_iter, iters_per_epoch)``."""
    default_setup(cfg)
    trainer = Trainer(cfg, resume=resume)
    trainer.register_hooks(list(hooks))
    trainer.train()
    sizes = trainer.max_iter, trainer.iters_per_epoch
    trainer.release()
    return sizes


@pytest.fixture(scope="module")
def teacher_run(synthetic_root, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("teacher"))
    run(tiny_reid_cfg(synthetic_root, out, *FAST))
    return out


@pytest.fixture(scope="module")
def iters_per_epoch(teacher_run) -> int:
    from omnireid.data import build_train_loader
    from omnireid.engine import setup_cfg

    return build_train_loader(setup_cfg(os.path.join(teacher_run, "config.yaml"))).iters_per_epoch


def kd_opts(teacher_dir: str, arch: str) -> tuple[str, ...]:
    return ("MODEL.META_ARCHITECTURE", arch,
            "KD.MODEL_CONFIG", str([os.path.join(teacher_dir, "config.yaml")]),
            "KD.MODEL_WEIGHTS", str([os.path.join(teacher_dir, "model_final.pth")]))


@pytest.mark.parametrize("arch", ["Distiller", "DistillerOverhaul"])
def test_distillation_trains_and_evaluates_end_to_end(synthetic_root, teacher_run, tmp_path, arch):
    out = str(tmp_path / arch)
    teacher_before = load_checkpoint_file(os.path.join(teacher_run, "model_final.pth"))["model"]
    cfg = tiny_reid_cfg(synthetic_root, out, *FAST, *kd_opts(teacher_run, arch), "TEST.EVAL_PERIOD", "1")
    default_setup(cfg)
    trainer = Trainer(cfg)
    trainer.train()
    model = trainer.model
    (teacher,) = model.teachers
    assert not teacher.training
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, teacher_before[key], rtol=0, atol=0, msg=key)
    log = open(os.path.join(out, "log.txt")).read()
    assert "loss_kd" in log
    if arch == "DistillerOverhaul":
        assert "loss_overhaul" in log
    trainer.release()
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    assert records[-1]["iteration"] == 3 and 0.0 <= records[-1]["mAP"] <= 100.0
    saved = load_checkpoint_file(os.path.join(out, "model_final.pth"))["model"]
    assert not any(k.startswith(("_loaded_teachers", "teacher")) for k in saved)
    assert any(k.startswith("connectors.") for k in saved) == (arch == "DistillerOverhaul")


class Interrupt(HookBase):
    def __init__(self, at: int) -> None:
        self.at = at

    def after_step(self) -> None:
        if self.trainer.iter + 1 == self.at:
            raise KeyboardInterrupt


def test_overhaul_with_ema_teacher_resumes_exactly(synthetic_root, teacher_run, iters_per_epoch, tmp_path):
    """Connectors, EMA teacher and optimizer state all come back: a crashed + resumed run is bitwise equal."""
    opts = ("TEST.EVAL_PERIOD", "0", "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]",
            *kd_opts(teacher_run, "DistillerOverhaul"), "KD.EMA.ENABLED", "True", "KD.EMA.MOMENTUM", "0.9",
            "SOLVER.MAX_ITER", str(iters_per_epoch + 2))  # a checkpoint after the first epoch
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    max_iter, _ = run(tiny_reid_cfg(synthetic_root, full, *opts))
    cfg = tiny_reid_cfg(synthetic_root, split, *opts)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, hooks=[Interrupt(at=max_iter - 1)])
    assert not os.path.exists(os.path.join(split, "model_final.pth"))
    resumed_from = load_checkpoint_file(os.path.join(split, open(os.path.join(split, "last_checkpoint")).read()))
    assert resumed_from["iteration"] == iters_per_epoch < max_iter - 1
    run(cfg, resume=True)
    a = load_checkpoint_file(os.path.join(full, "model_final.pth"))["model"]
    b = load_checkpoint_file(os.path.join(split, "model_final.pth"))["model"]
    assert a.keys() == b.keys() and any(k.startswith("ema_teacher.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after resume")
    # the EMA teacher followed the student without being equal to it
    assert not torch.equal(a["ema_teacher.backbone.conv1.weight"], a["backbone.conv1.weight"])


def test_trained_student_deploys_without_its_teacher_files(synthetic_root, teacher_run, tmp_path):
    """A DistillerOverhaul + EMA student exports, extracts, evaluates and loads in Predictor on its own: its
    checkpoint holds connectors.* and ema_teacher.* (training-only) and the teacher files are gone."""
    import shutil

    import numpy as np

    from omnireid.cli.main import main
    from omnireid.config import get_cfg
    from omnireid.export.parity import inference_transform, load_images
    from omnireid.inference import Predictor
    from omnireid.modeling.meta_arch import Baseline

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    for name in ("config.yaml", "model_final.pth"):
        shutil.copy(os.path.join(teacher_run, name), teacher / name)
    out = str(tmp_path / "student")
    run(tiny_reid_cfg(synthetic_root, out, *FAST, *kd_opts(str(teacher), "DistillerOverhaul"),
                      "KD.EMA.ENABLED", "True", "KD.EMA.MOMENTUM", "0.5"))
    shutil.rmtree(teacher)
    config, weights = os.path.join(out, "config.yaml"), os.path.join(out, "model_final.pth")
    saved = load_checkpoint_file(weights)["model"]
    assert any(k.startswith("connectors.") for k in saved) and any(k.startswith("ema_teacher.") for k in saved)

    # the reference: the student's own entries in a Baseline, loaded by hand
    cfg = get_cfg()
    cfg.merge_from_file(config)
    student = Baseline.from_config(cfg)
    student.load_state_dict({k: v for k, v in saved.items() if not k.startswith(("connectors.", "ema_teacher."))})
    student.eval()

    onnx_dir = tmp_path / "onnx"
    assert main(["export", "--config-file", config, "MODEL.WEIGHTS", weights, "--format", "onnx",
                 "--output", str(onnx_dir), "--parity-images", "4", "--latency-runs", "1"]) == 0
    assert json.loads((onnx_dir / "export_report.json").read_text())["parity"]["passed"]

    npz = tmp_path / "query.npz"
    assert main(["extract", "--config-file", config, "MODEL.WEIGHTS", weights, "--dataset", "Market1501:query",
                 "--output", str(npz)]) == 0
    extracted = np.load(npz)
    images = load_images(list(extracted["paths"]), inference_transform(cfg))
    with torch.no_grad():
        expected = student(images.float())["features"].numpy()
    np.testing.assert_allclose(extracted["features"], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(Predictor.from_artifact(str(onnx_dir / "model.onnx"))(images), expected,
                               atol=1e-3, rtol=0)
    pytorch = Predictor.from_artifact(weights, device="cpu")  # config.yaml next to the checkpoint
    np.testing.assert_allclose(pytorch(images), expected, atol=1e-5, rtol=0)

    assert main(["train", "--eval-only", "--config-file", config, "MODEL.WEIGHTS", weights,
                 "OUTPUT_DIR", str(tmp_path / "eval")]) == 0
