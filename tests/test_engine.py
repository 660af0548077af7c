"""The training engine end to end: outputs, exact resume, DDP equivalence, failure modes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from omnireid.engine import Trainer, default_setup, seed_everything
from omnireid.engine.hooks import HookBase
from omnireid.utils.file_io import load_checkpoint_file



def train(cfg, resume=False, hooks=()):
    default_setup(cfg)
    trainer = Trainer(cfg, resume=resume)
    trainer.register_hooks(list(hooks))
    trainer.train()
    max_iter = trainer.max_iter
    trainer.release()
    return max_iter


def final_state(output_dir):
    return load_checkpoint_file(os.path.join(output_dir, "model_final.pth"))["model"]


def test_training_writes_all_outputs(synthetic_root, tmp_path, make_tiny_cfg):
    out = str(tmp_path / "run")
    cfg = make_tiny_cfg(synthetic_root, out)
    max_iter = train(cfg)
    files = set(os.listdir(out))
    assert {"config.yaml", "log.txt", "metrics.json", "metadata.json", "model_final.pth", "last_checkpoint"} <= files
    assert any(f.startswith("events.out.tfevents") for f in files)
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    assert records[-1]["iteration"] == max_iter and records[-1]["dataset"] == "Market1501"
    for key in ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP"):
        assert 0.0 <= records[-1][key] <= 100.0
    saved = open(os.path.join(out, "config.yaml")).read()
    assert "NUM_CLASSES: 12" in saved  # filled from the data, so the model can be rebuilt
    metadata = json.load(open(os.path.join(out, "metadata.json")))
    assert len(metadata["class_names"]) == 12 and metadata["camera_names"] == ["0", "1", "2"]
    assert load_checkpoint_file(os.path.join(out, "model_final.pth"))["metadata"] == metadata


class Interrupt(HookBase):
    """Simulates a crash right after iteration ``at`` (a checkpoint exists at an earlier one)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_step(self) -> None:
        if self.trainer.iter + 1 == self.at:
            raise KeyboardInterrupt


PRECISE_BN = ("TEST.PRECISE_BN.ENABLED", "True", "TEST.PRECISE_BN.DATASET", "Market1501",
              "TEST.PRECISE_BN.NUM_ITER", "2")


@pytest.mark.parametrize("workers, evaluation", [
    (0, ("TEST.EVAL_PERIOD", "0")), (2, ("TEST.EVAL_PERIOD", "0")),
    # evaluation + PreciseBN every epoch: the checkpoints hold the re-estimated BN statistics
    (0, ("TEST.EVAL_PERIOD", "1", *PRECISE_BN)),
])
def test_interrupted_and_resumed_run_matches_uninterrupted(synthetic_root, tmp_path, workers, evaluation,
                                                           make_tiny_cfg):
    assert_resume_is_exact(make_tiny_cfg, synthetic_root, tmp_path, ["DATALOADER.NUM_WORKERS", str(workers), *evaluation])


def assert_resume_is_exact(make_tiny_cfg, synthetic_root, tmp_path, opts: list[str]) -> dict:
    """Train with ``opts``; train again, interrupted one iteration before the end and resumed: the
    final weights must be bit-identical. Returns the final state dict."""
    full = str(tmp_path / "full")
    max_iter = train(make_tiny_cfg(synthetic_root, full, *opts))

    split = str(tmp_path / "split")
    cfg = make_tiny_cfg(synthetic_root, split, *opts)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, hooks=[Interrupt(at=max_iter - 1)])
    assert not os.path.exists(os.path.join(split, "model_final.pth"))
    seed_everything(12345)  # a different process state: resume must not depend on it
    train(cfg, resume=True)

    a, b = final_state(full), final_state(split)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after resume")
    return a


def test_non_finite_loss_stops_with_a_clear_message(synthetic_root, tmp_path, make_tiny_cfg):
    cfg = make_tiny_cfg(synthetic_root, str(tmp_path / "nan"), "TEST.EVAL_PERIOD", "0")
    trainer = Trainer(cfg)
    trainer.model.forward = lambda batch: {"loss_cls": torch.tensor(float("nan"), requires_grad=True)}
    with pytest.raises(FloatingPointError, match="non-finite at iteration 0.*loss_cls=nan"):
        trainer.train()


def test_eval_only_from_cli(synthetic_root, tmp_path, make_tiny_cfg):
    out = str(tmp_path / "trained")
    train(make_tiny_cfg(synthetic_root, out, "SOLVER.MAX_EPOCH", "1", "TEST.EVAL_PERIOD", "0"))
    from omnireid.cli.main import main

    ev = str(tmp_path / "eval")
    code = main(["train", "--eval-only", "--config-file", os.path.join(out, "config.yaml"),
                 "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), "OUTPUT_DIR", ev])
    assert code == 0 and os.path.isfile(os.path.join(ev, "log.txt"))
    (record,) = [json.loads(line) for line in open(os.path.join(ev, "metrics.json"))]  # --eval-only writes it too
    assert record["eval_only"] and record["dataset"] == "Market1501" and 0 <= record["mAP"] <= 100
    assert record["weights"].endswith("model_final.pth") and record["iteration"] > 0


def _torchrun(nproc: int, out: str, synthetic_root: str, opts: list[str], make_tiny_cfg) -> None:
    cfg = make_tiny_cfg(synthetic_root, out, *opts)
    os.makedirs(out, exist_ok=True)
    cfg_path = os.path.join(out, "input.yaml")
    with open(cfg_path, "w") as f:
        f.write(cfg.dump())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "omnireid", "train", "--config-file", cfg_path]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMNIREID_PROGRESS": "0"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_two_process_ddp_equals_one_process_with_same_total_batch(synthetic_root, tmp_path, make_tiny_cfg):
    # CE only and GroupNorm: per-sample losses, so averaging over ranks equals the full-batch mean.
    opts = ["MODEL.LOSSES.NAME", "['CrossEntropyLoss']", "MODEL.BACKBONE.NORM", "GN",
            "MODEL.HEADS.WITH_BNNECK", "False", "INPUT.REA.ENABLED", "False", "INPUT.FLIP.ENABLED", "False",
            "INPUT.PADDING.ENABLED", "False", "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "0",
            "TEST.EVAL_PERIOD", "1",
            # fp32 NCHW: this test is about gradient averaging; bf16 autocast rounds each process's partial
            # results and NHWC kernels sum in another order, either beyond the 1e-5 tolerance below.
            "SOLVER.AMP.ENABLED", "False", "MODEL.CHANNELS_LAST", "false"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    _torchrun(1, one, synthetic_root, opts, make_tiny_cfg)
    _torchrun(2, two, synthetic_root, opts, make_tiny_cfg)
    a, b = final_state(one), final_state(two)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=f"{key} differs between 1 and 2 processes")
    m1 = [json.loads(line) for line in open(os.path.join(one, "metrics.json"))][-1]
    m2 = [json.loads(line) for line in open(os.path.join(two, "metrics.json"))][-1]
    # Weights agree to ~1e-5, and the features of a 3-iteration model are nearly random, so a
    # near-tie may flip one query: allow a fraction of a query. (The evaluator's own 2-process
    # test checks exact, in-order gathering on identical features.)
    for key in ("Rank-1", "mAP", "mINP"):
        assert m1[key] == pytest.approx(m2[key], abs=0.5)


def test_precise_bn_gives_the_average_of_batch_statistics():
    from torch import nn

    from omnireid.engine.hooks import update_bn_stats

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    batches = [torch.randn(5, 3, 4, 4) * (i + 1) + i for i in range(3)]
    used = update_bn_stats(model, iter(batches + [torch.zeros(5, 3, 4, 4)]), num_iters=3)
    assert used == 3 and not model.training and model[1].momentum == 0.1
    with torch.no_grad():
        outs = [model[0](b) for b in batches]
    mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.var(dim=(0, 2, 3), unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(model[1].running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var, var, rtol=1e-5, atol=1e-6)


def test_training_with_precise_bn(synthetic_root, tmp_path, make_tiny_cfg):
    out = str(tmp_path / "pbn")
    cfg = make_tiny_cfg(synthetic_root, out, "SOLVER.MAX_EPOCH", "1", "TEST.EVAL_PERIOD", "1",
                        "TEST.PRECISE_BN.ENABLED", "True", "TEST.PRECISE_BN.DATASET", "Market1501",
                        "TEST.PRECISE_BN.NUM_ITER", "2")
    train(cfg)
    assert "PreciseBN: re-estimating" in open(os.path.join(out, "log.txt")).read()
    # model_final.pth is the evaluated model: --eval-only on it reproduces the final metrics exactly
    from omnireid.cli.main import main

    ev = str(tmp_path / "eval")
    assert main(["train", "--eval-only", "--config-file", os.path.join(out, "config.yaml"),
                 "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), "OUTPUT_DIR", ev]) == 0
    trained = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))][-1]
    evaluated = [json.loads(line) for line in open(os.path.join(ev, "metrics.json"))][-1]
    for key in ("Rank-1", "Rank-5", "mAP", "mINP"):
        assert evaluated[key] == trained[key], key


def test_precise_bn_keeps_the_statistics_of_bn_layers_that_see_no_batch():
    """A distiller's EMA teacher runs in eval mode: PreciseBN must not reset it to mean 0 / var 1."""
    from omnireid.engine.hooks import update_bn_stats

    class WithEvalTeacher(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.student = torch.nn.BatchNorm1d(3)
            self.teacher = torch.nn.BatchNorm1d(3)

        def train(self, mode=True):
            super().train(mode)
            self.teacher.eval()  # like Distiller.train(): teachers stay in eval mode
            return self

        def forward(self, x):
            return self.student(x) + self.teacher(x)

    model = WithEvalTeacher()
    with torch.no_grad():
        model.teacher.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        model.teacher.running_var.copy_(torch.tensor([4.0, 5.0, 6.0]))
    teacher = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    batches = [torch.randn(8, 3, generator=torch.Generator().manual_seed(i)) + 10 for i in range(3)]
    assert update_bn_stats(model, iter(batches), num_iters=3) == 3
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher[key]), key
    torch.testing.assert_close(model.student.running_mean, torch.stack(batches).mean(dim=(0, 1)))


def test_bf16_autocast_training_on_cpu(synthetic_root, tmp_path, make_tiny_cfg):
    cfg = make_tiny_cfg(synthetic_root, str(tmp_path / "amp"), "SOLVER.AMP.ENABLED", "True",
                        "SOLVER.AMP.DTYPE", "bf16", "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0")
    default_setup(cfg)
    trainer = Trainer(cfg)
    assert trainer.amp_dtype is torch.bfloat16 and not trainer.scaler.is_enabled()
    trainer.train()
    assert all(torch.isfinite(v).all() for v in trainer.checkpointer.model.state_dict().values())
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        Trainer(make_tiny_cfg(synthetic_root, str(tmp_path / "fp16"), "SOLVER.AMP.ENABLED", "True",
                              "SOLVER.AMP.DTYPE", "fp16"))


def test_flip_test_time_augmentation_averages_the_mirror():
    from omnireid.engine import extract_features

    class Named(torch.nn.Module):
        """Eval-mode dict outputs from a batch dict; records the camids it was given."""

        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(1))
            self.camids_seen: list = []

        def forward(self, batch):
            self.camids_seen.append(batch["camids"])
            features = self.net(batch["images"])
            return {"features": features, "logits": features.sum(1, keepdim=True)}

    model = Named().eval()
    images, camids = torch.rand(2, 3, 5, 4), torch.tensor([3, 1])
    net = model.net
    expected = (net(images) + net(images.flip(3))) / 2
    outputs = extract_features(model, {"images": images, "camids": camids}, flip=True)
    torch.testing.assert_close(outputs["features"], expected)
    torch.testing.assert_close(outputs["logits"], expected.sum(1, keepdim=True))
    assert all(torch.equal(c, camids) for c in model.camids_seen)  # the mirror keeps the side information
    torch.testing.assert_close(extract_features(model, {"images": images, "camids": camids})["features"], net(images))
