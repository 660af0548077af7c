"""Classification and retrieval tasks: evaluators, MixUp/CutMix loss, and tiny end-to-end runs of
``omnireid train`` (class names saved beside the checkpoint) and of a classifier distillation."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import omnireid.tasks  # noqa: F401  (registers the tasks)
from omnireid.config import get_cfg
from omnireid.data import TestSet as Split  # (a name pytest does not collect)
from omnireid.evaluation import build_evaluator
from omnireid.evaluation.retrieval import evaluate_retrieval

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def feed(evaluator, outputs: dict, targets, batch_size=7, shuffle_seed=None):
    """Process in batches, optionally in a shuffled order (evaluators restore order from indices)."""
    n = len(targets)
    order = np.arange(n) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(n)
    evaluator.reset()
    for s in range(0, n, batch_size):
        idx = torch.from_numpy(order[s : s + batch_size])
        evaluator.process({"targets": torch.as_tensor(targets)[idx], "indices": idx},
                          {k: v[idx] for k, v in outputs.items()})
    return evaluator.evaluate()


def test_retrieval_evaluator_follows_the_protocol():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, 60)
    feats = torch.from_numpy(rng.standard_normal((60, 8)).astype(np.float32))
    cfg = get_cfg()
    items = [{"img_path": f"{i}.jpg", "targets": int(t)} for i, t in enumerate(labels)]
    res = feed(build_evaluator(cfg, Split("T", "retrieval", items, {"recall_ks": [1, 3]}), None),
               {"features": feats}, labels, shuffle_seed=1)
    assert res == pytest.approx(evaluate_retrieval(feats, labels, recall_ks=(1, 3)).summary())
    cfg.TEST.RECALLS = [2]  # the config overrides the test set's K; num_query splits queries / gallery
    res = feed(build_evaluator(cfg, Split("T", "retrieval", items, {"num_query": 20}), None),
               {"features": feats}, labels)
    assert res == pytest.approx(evaluate_retrieval(feats[:20], labels[:20], feats[20:], labels[20:],
                                                   recall_ks=(2,)).summary())


def test_classification_evaluator_writes_artefacts(tmp_path):
    cfg = get_cfg()
    names = ["cat", "dog", "bird"]
    items = [{"img_path": f"{i}.jpg", "targets": i % 3} for i in range(9)]
    logits = torch.eye(3)[[0, 1, 2, 0, 1, 1, 0, 2, 2]] * 5.0  # sample 5 (a bird) is called a dog
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    evaluator = build_evaluator(cfg, Split("Pets", "classification", items, {"class_names": names}), str(tmp_path))
    res = feed(evaluator, {"logits": logits, "features": logits}, targets, batch_size=4, shuffle_seed=2)
    # samples 5 (bird -> dog) and 7 (dog -> bird) are wrong
    assert res["Top-1"] == pytest.approx(100 * 7 / 9) and res["Top-5"] == pytest.approx(100.0)
    assert res["MeanClassAcc"] == pytest.approx(100 * (3 / 3 + 2 / 3 + 2 / 3) / 3)
    with open(tmp_path / "Pets_confusion.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == names and rows[3] == ["bird", "0", "1", "2"]
    assert Image.open(tmp_path / "Pets_confusion.png").format == "PNG"
    assert (tmp_path / "Pets_per_class.csv").read_text().splitlines()[1] == "cat,3,3,100.0000"


def classifier_cfg(*opts):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "ImageClassifier", "MODEL.BACKBONE.DEPTH", "18x",
                         "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
                         "MODEL.HEADS.NUM_CLASSES", "4", "MODEL.LOSSES.NAME", "['CrossEntropyLoss']",
                         "CLASSIFICATION.MIXUP.ALPHA", "0.4", "CLASSIFICATION.MIXUP.CUTMIX_ALPHA", "1.0", *opts])
    return cfg


def test_image_classifier_mixes_training_batches():
    from omnireid.modeling import build_model

    model = build_model(classifier_cfg())
    assert model.mixer is not None
    batch = {"images": torch.randint(0, 255, (6, 3, 32, 16), dtype=torch.uint8), "targets": torch.tensor([0, 1, 2, 3, 0, 1])}
    losses = model.train()(batch)
    assert set(losses) == {"loss_cls"} and torch.isfinite(losses["loss_cls"])
    images, soft = model.mixer(torch.rand(6, 3, 32, 16), batch["targets"])
    assert soft.shape == (6, 4) and torch.allclose(soft.sum(1), torch.ones(6))
    out = model.eval()(batch)
    assert out["logits"].shape == (6, 4) and out["features"].shape == (6, 512)
    with pytest.raises(ValueError, match="CLS_LAYER Linear"):
        build_model(classifier_cfg("MODEL.HEADS.CLS_LAYER", "CircleSoftmax"))


# ------------------------------------------------------------------------------------------ end to end
def omnireid(args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMNIREID_PROGRESS="0")
    return subprocess.run([sys.executable, "-m", "omnireid", *args], capture_output=True, text=True, cwd=cwd, env=env)


def write_colour_tree(root, per_class=10, seed=0):
    """train/val folders of 16x16 images whose class is the dominant colour."""
    rng = np.random.default_rng(seed)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for split, count in (("train", per_class), ("val", per_class // 2)):
        for name, rgb in colours.items():
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(count):
                pixels = np.clip(np.array(rgb) + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, split, name, f"{i}.png"))


TINY = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
        "MODEL.BACKBONE.PRETRAIN", "False", "INPUT.SIZE_TRAIN", "[16,16]", "INPUT.SIZE_TEST", "[16,16]",
        "INPUT.CROP.ENABLED", "False", "DATALOADER.NUM_WORKERS", "0", "SOLVER.AMP.ENABLED", "False",
        "SOLVER.OPT", "Adam", "SOLVER.BASE_LR", "0.001", "SOLVER.IMS_PER_BATCH", "10", "SOLVER.MAX_ITER", "12",
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.EVAL_PERIOD", "100",
        "TEST.IMS_PER_BATCH", "16", "CUDNN_BENCHMARK", "False", "SEED", "1"]


def test_classification_trains_saves_class_names_and_distils(tmp_path):
    write_colour_tree(str(tmp_path / "data"))
    teacher_dir = tmp_path / "teacher"
    proc = omnireid(["train", "--config-file", os.path.join(REPO, "configs/Classification/ImageFolder_R50.yml"),
                     "DATASETS.ROOT", str(tmp_path / "data"), "OUTPUT_DIR", str(teacher_dir), *TINY], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metadata = json.loads((teacher_dir / "metadata.json").read_text())
    assert metadata["class_names"] == ["blue", "green", "red"]
    checkpoint = torch.load(teacher_dir / "model_final.pth", weights_only=True)
    assert checkpoint["metadata"]["class_names"] == ["blue", "green", "red"]
    assert (teacher_dir / "ImageFolder_confusion.png").is_file()
    records = [json.loads(line) for line in (teacher_dir / "metrics.json").read_text().splitlines()]
    final = [r for r in records if "Top-1" in r][-1]
    assert final["Top-1"] > 60  # three well-separated colours
    # predict: class names from metadata.json; the same predictions as the evaluator's Top-1
    proc = omnireid(["predict", str(tmp_path / "data" / "val"), "--weights", str(teacher_dir / "model_final.pth"),
                     "--output", str(tmp_path / "preds.csv"), "--topk", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "preds.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15 and set(rows[0]) == {"path", "logits.class", "logits.probability", "logits.top.0.class",
                                                "logits.top.0.probability", "logits.top.1.class",
                                                "logits.top.1.probability"}
    correct = sum(os.path.basename(os.path.dirname(r["path"])) == r["logits.class"] for r in rows)
    assert 100.0 * correct / len(rows) == pytest.approx(final["Top-1"])
    assert all(0 < float(r["logits.probability"]) <= 1 for r in rows)
    proc = omnireid(["predict", str(tmp_path / "nowhere"), "--weights", str(teacher_dir / "model_final.pth")], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "input not found" in proc.stderr
    # distillation: a student classifier learning from the teacher's margin-free logits
    student_dir = tmp_path / "student"
    proc = omnireid(["train", "--config-file", os.path.join(REPO, "configs/Classification/ImageFolder_R50.yml"),
                     "DATASETS.ROOT", str(tmp_path / "data"), "OUTPUT_DIR", str(student_dir), *TINY,
                     "MODEL.META_ARCHITECTURE", "Distiller", "CLASSIFICATION.MIXUP.ALPHA", "0.0",
                     "CLASSIFICATION.MIXUP.CUTMIX_ALPHA", "0.0",
                     "KD.MODEL_CONFIG", f"['{teacher_dir / 'config.yaml'}']",
                     "KD.MODEL_WEIGHTS", f"['{teacher_dir / 'model_final.pth'}']"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loss_kd" in proc.stderr + proc.stdout or "loss_kd" in (student_dir / "log.txt").read_text()
    records = [json.loads(line) for line in (student_dir / "metrics.json").read_text().splitlines()]
    assert any("Top-1" in r for r in records)


def test_retrieval_trains_on_the_sop_layout(tmp_path):
    from omnireid.tasks.retrieval.synthetic import write_synthetic_retrieval

    write_synthetic_retrieval(str(tmp_path / "data" / "Stanford_Online_Products"), seed=0, num_train_ids=12,
                              num_test_ids=6, num_cameras=3)
    out = tmp_path / "run"
    proc = omnireid(["train", "--config-file", os.path.join(REPO, "configs/Demo/synthetic_retrieval_R18.yml"),
                     "DATASETS.ROOT", str(tmp_path / "data"), "OUTPUT_DIR", str(out), *TINY,
                     "INPUT.SIZE_TRAIN", "[32,16]", "INPUT.SIZE_TEST", "[32,16]", "SOLVER.IMS_PER_BATCH", "16",
                     "TEST.EVAL_PERIOD", "1", "SOLVER.MAX_ITER", "0", "SOLVER.MAX_EPOCH", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()][-1]
    assert {"Recall@1", "Recall@8", "R-Precision", "MAP@R", "SkippedQueries"} <= set(record)
    assert record["SkippedQueries"] == 0
    # distillation: a retrieval student learning from that run's margin-free logits, evaluated by protocol
    student = tmp_path / "student"
    proc = omnireid(["train", "--config-file", os.path.join(REPO, "configs/Demo/synthetic_retrieval_R18.yml"),
                     "DATASETS.ROOT", str(tmp_path / "data"), "OUTPUT_DIR", str(student), *TINY,
                     "INPUT.SIZE_TRAIN", "[32,16]", "INPUT.SIZE_TEST", "[32,16]", "SOLVER.IMS_PER_BATCH", "16",
                     "TEST.EVAL_PERIOD", "1", "SOLVER.MAX_ITER", "0", "SOLVER.MAX_EPOCH", "1",
                     "MODEL.META_ARCHITECTURE", "Distiller", "KD.MODEL_CONFIG", f"['{out / 'config.yaml'}']",
                     "KD.MODEL_WEIGHTS", f"['{out / 'model_final.pth'}']"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loss_kd" in (student / "log.txt").read_text()
    record = [json.loads(line) for line in (student / "metrics.json").read_text().splitlines()][-1]
    assert {"Recall@1", "MAP@R"} <= set(record)
