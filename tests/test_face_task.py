"""The face task end to end: synthetic data in every layout, the datasets reading it, the verification
evaluator, training + evaluation through the CLI, export and extraction of embeddings."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from omnireid.data.common import read_image
from omnireid.data.datasets import bases
from omnireid.data.datasets.bases import DatasetLayoutError
from omnireid.tasks.face.datasets import FaceCSV, FaceFolder, FaceRecordIO, FaceVerification
from omnireid.tasks.face.evaluator import VerificationEvaluator
from omnireid.tasks.face.recordio import RecordIOReader
from omnireid.tasks.face.synthetic import write_synthetic_faces
from omnireid.tasks.face.verification_bin import read_verification_bin

SETS = ["synthetic_frontal", "synthetic_hard"]


@pytest.fixture(scope="module")
def face_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("faces")
    write_synthetic_faces(str(root / "synthetic_faces"), seed=1, num_train_ids=6, images_per_id=4, num_test_ids=6,
                          num_pairs=20)
    return str(root)


def _pixels(path: str) -> np.ndarray:
    return np.asarray(read_image(path))


def test_every_training_layout_gives_the_same_identities(face_root):
    data = os.path.join(face_root, "synthetic_faces")
    folder = FaceFolder(os.path.join(data, "images"))
    table = FaceCSV(os.path.join(data, "train.csv"))
    rec = FaceRecordIO(data)
    assert len(folder.train) == len(table.train) == len(rec.train) == 24
    for a, b, c in zip(folder.train, table.train, rec.train):
        assert a["targets"] == b["targets"] == c["targets"]
        assert np.array_equal(_pixels(a["img_path"]), _pixels(c["img_path"]))  # the record holds the file's bytes
        assert a["img_path"] == b["img_path"]
    assert folder.metadata()["class_names"] == [f"{i:05d}" for i in range(6)]
    assert rec.train[0]["img_path"].endswith("train.rec::1")


def test_verification_sets_are_pairs_of_bin_images(face_root):
    data = os.path.join(face_root, "synthetic_faces")
    dataset = FaceVerification(data, SETS)
    sets = dataset.test_sets()
    assert [s.name for s in sets] == SETS and all(s.protocol == "verification" for s in sets)
    images, issame = read_verification_bin(os.path.join(data, "synthetic_hard.bin"))
    hard = sets[1]
    assert len(hard.items) == 40 and hard.meta["pairs"].tolist()[:2] == [[0, 1], [2, 3]]
    assert hard.meta["issame"].tolist() == issame.tolist() and issame.sum() == 10
    decoded = np.asarray(Image.open(io.BytesIO(images[5])).convert("RGB"))
    assert np.array_equal(_pixels(hard.items[5]["img_path"]), decoded)
    with pytest.raises(DatasetLayoutError, match=r"lfw\.bin not found.*synthetic_frontal"):
        FaceVerification(data, ["lfw"])


def test_recordio_items_survive_pickling_to_workers(face_root):
    import pickle

    reader = RecordIOReader(os.path.join(face_root, "synthetic_faces", "train.rec"))
    reader.read(1)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.read(1) == reader.read(1)


def test_verification_evaluator_on_known_embeddings(tmp_path):
    # 10 pairs per class of outcome: same pairs identical, different pairs orthogonal -> perfect accuracy
    rng = np.random.default_rng(0)
    items, features, pairs, issame = [], [], [], []
    for i in range(20):
        a = rng.normal(size=8)
        b = a if i % 2 == 0 else np.linalg.svd(np.stack([a, rng.normal(size=8)]))[2][-1]
        features += [a, b]
        pairs.append([2 * i, 2 * i + 1])
        issame.append(i % 2 == 0)
        items += [{"img_path": f"x{2 * i}"}, {"img_path": f"x{2 * i + 1}"}]
    test_set = bases.TestSet("toy", "verification", items, {"pairs": np.array(pairs), "issame": np.array(issame)})
    from omnireid.config import get_cfg

    cfg = get_cfg()
    cfg.TEST.FLIP.ENABLED = True
    evaluator = VerificationEvaluator.from_config(cfg, test_set, str(tmp_path))
    evaluator.reset()
    feats = torch.tensor(np.stack(features), dtype=torch.float32)
    for start in range(0, 40, 16):  # out of order on purpose: indices restore the order
        index = torch.arange(start, min(start + 16, 40)).flip(0)
        evaluator.process({"indices": index}, {"features": feats[index]})
    metrics = evaluator.evaluate()
    assert metrics["Accuracy"] == 100.0 and metrics["Accuracy-std"] == 0.0 and metrics["AUC"] == 100.0
    assert metrics["TAR@FAR=0.001"] == 100.0
    assert (tmp_path / "roc_toy.csv").read_text().startswith("far,tar,threshold\n")
    from omnireid.evaluation.headline import headline_metric

    assert headline_metric("verification")(metrics) == 100.0


def _face_cli_opts(root: str, out: str, *extra: str) -> list[str]:
    return ["DATASETS.ROOT", root, "OUTPUT_DIR", out, "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x",
            "MODEL.BACKBONE.WIDTH_MULT", "0.25", "MODEL.BACKBONE.FEAT_DIM", "32", "INPUT.SIZE_TRAIN", "[56, 56]",
            "INPUT.SIZE_TEST", "[56, 56]", "SOLVER.IMS_PER_BATCH", "8", "SOLVER.MAX_ITER", "4",
            "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.EVAL_PERIOD", "100", "TEST.IMS_PER_BATCH", "16",
            "DATALOADER.NUM_WORKERS", "0", *extra]


def test_train_evaluate_export_and_extract_from_the_cli(face_root, tmp_path, capsys):
    from omnireid.cli.main import main

    out = str(tmp_path / "run")
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "Face", "demo_synthetic.yml")
    assert main(["train", "--config-file", config, *_face_cli_opts(face_root, out)]) == 0
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    assert {r["dataset"] for r in records} == set(SETS)
    for record in records:
        assert 0 <= record["Accuracy"] <= 100 and "TAR@FAR=0.001" in record
    assert os.path.isfile(os.path.join(out, "roc_synthetic_hard.csv"))

    # export to ONNX with its parity report, then extract embeddings of the training images
    pytest.importorskip("onnxruntime")
    export_dir = str(tmp_path / "export")
    main(["export", "--config-file", os.path.join(out, "config.yaml"), "--format", "onnx",
          "--output", export_dir, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")])
    report = json.load(open(os.path.join(export_dir, "export_report.json")))
    # embeddings are compared by direction (the scale of an un-normalised face embedding is arbitrary)
    assert report["parity"]["outputs"]["features"]["min_cosine"] >= 0.9999
    images = os.path.join(face_root, "synthetic_faces", "images", "00000")
    torch_npz, onnx_npz = str(tmp_path / "torch.npz"), str(tmp_path / "onnx.npz")
    assert main(["extract", "--config-file", os.path.join(out, "config.yaml"), "--images", images,
                 "--output", torch_npz, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")]) == 0
    onnx_file = next(os.path.join(export_dir, f) for f in os.listdir(export_dir) if f.endswith(".onnx"))
    assert main(["extract", "--artifact", onnx_file, "--images", images, "--output", onnx_npz]) == 0
    from_torch, from_onnx = np.load(torch_npz)["features"], np.load(onnx_npz)["features"]
    assert from_torch.shape == (4, 32)
    cosine = (from_onnx * from_torch).sum(1) / (np.linalg.norm(from_onnx, axis=1) * np.linalg.norm(from_torch, axis=1))
    assert cosine.min() > 0.9999


def test_partial_fc_sampling_trains_from_the_cli(face_root, tmp_path):
    from omnireid.cli.main import main

    out = str(tmp_path / "pfc")
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "Face", "demo_synthetic.yml")
    assert main(["train", "--config-file", config,
                 *_face_cli_opts(face_root, out, "FACE.SAMPLE_RATE", "0.5", "DATASETS.NAMES", "['FaceFolder']",
                                 "FACE.FOLDER", "synthetic_faces/images", "DATASETS.TESTS", "[]")]) == 0
    state = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)["model"]
    assert state["heads.classifier.weight"].shape == (6, 32)


def test_fastface_recipe_trains_circle_loss_through_partial_fc():
    """configs/Face/fastface_ir50_circle.yml (FastFace's face_base.yml + r50_ir.yml values) builds and
    takes a training step: CircleSoftmax s=256 m=0.25 on the Partial FC centres, cosine schedule."""
    import omnireid.tasks  # noqa: F401
    from omnireid.config import setup_cfg
    from omnireid.modeling import build_model

    cfg = setup_cfg(os.path.join(os.path.dirname(__file__), "..", "configs", "Face", "fastface_ir50_circle.yml"),
                    ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.WIDTH_MULT", "0.25", "MODEL.HEADS.NUM_CLASSES", "4",
                     "MODEL.DEVICE", "cpu"])
    assert (cfg.MODEL.HEADS.CLS_LAYER, cfg.MODEL.HEADS.SCALE, cfg.MODEL.HEADS.MARGIN) == ("CircleSoftmax", 256.0, 0.25)
    assert (cfg.SOLVER.SCHED, cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_EPOCH) == (
        "CosineAnnealingLR", 0.1, 512, 16)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = {"images": torch.randint(0, 255, (4, 3, 112, 112), dtype=torch.uint8), "targets": torch.tensor([0, 1, 2, 3])}
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total) and total.item() > 0
    total.backward()
