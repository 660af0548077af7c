"""The attribute task through the core seams: datasets, head, losses, evaluator, training."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import omnireid.tasks  # noqa: F401  (registers the attribute task)
from attr_fixtures import MARKET_BINARY, make_market_attribute, make_pa100k
from omnireid.config import get_cfg
from omnireid.data.datasets import DATASET_REGISTRY
from omnireid.evaluation import build_evaluator
from omnireid.tasks.attributes.datasets import AttributeCSV, Market1501Attr, PA100K, SyntheticAttributes
from omnireid.tasks.attributes.head import AttributeHead
from omnireid.tasks.attributes.modeling import BinaryCrossEntropyLoss, GroupCrossEntropyLoss


def test_market_attribute_dataset_validation_is_carved_from_train_identities(tmp_path):
    folder, structs = make_market_attribute(tmp_path)
    data = Market1501Attr(str(tmp_path), val_fraction=0.5, val_seed=0, test_splits=["val", "test"], reid_test=True)
    tests = {t.name: t for t in data.test_sets()}
    assert set(tests) == {"Market1501Attr-val", "Market1501Attr", "Market1501Attr-reid"}
    train_ids = {i["targets"] for i in data.train}
    val_ids = {i["targets"] for i in tests["Market1501Attr-val"].items}
    assert len(train_ids) == len(val_ids) == 1 and not train_ids & val_ids and train_ids | val_ids == {2, 7}
    assert all("bounding_box_train" in i["img_path"] for i in tests["Market1501Attr-val"].items)
    test = tests["Market1501Attr"]
    assert test.protocol == "attributes" and {i["targets"] for i in test.items} == {1, 3}
    assert all("bounding_box_test" in i["img_path"] for i in test.items)  # distractors/junk have no labels
    assert test.meta["attribute_names"] == list(MARKET_BINARY)
    assert test.meta["attribute_groups"] == {"age": ["young", "teenager", "adult", "old"]}
    item = test.items[0]
    k = [1, 3].index(item["targets"])
    np.testing.assert_array_equal(item["attributes"], [structs["test"][f][0, k] - 1 for f in MARKET_BINARY])
    assert item["attribute_groups"].tolist() == [structs["test"]["age"][0, k] - 1]
    reid = tests["Market1501Attr-reid"]
    assert reid.protocol == "reid" and reid.meta["num_query"] == 2
    assert data.metadata() == {"attribute_names": list(MARKET_BINARY),
                               "attribute_groups": {"age": ["young", "teenager", "adult", "old"]},
                               "attribute_threshold": 0.5}


def test_market_attribute_missing_identity_is_an_error(tmp_path):
    from scipy.io import savemat

    from attr_fixtures import cell
    from omnireid.data.datasets import DatasetLayoutError

    folder, structs = make_market_attribute(tmp_path)
    with pytest.raises(ValueError, match="VAL_FRACTION"):
        Market1501Attr(str(tmp_path), val_fraction=0.0, test_splits=["val", "test"])
    train = dict(structs["train"])
    train = {k: (v[:, :1] if k != "image_index" else cell(["0002"], (1, 1))) for k, v in train.items()}
    savemat(str(folder / "market_attribute.mat"), {"market_attribute": {"train": train, "test": structs["test"]}})
    with pytest.raises(DatasetLayoutError, match="identity 7 .* has no attribute labels in the train annotations"):
        Market1501Attr(str(tmp_path), val_fraction=0.0, test_splits=["test"])


def test_pa100k_dataset_splits(tmp_path):
    folder, mat = make_pa100k(tmp_path)
    data = PA100K(str(tmp_path))
    assert len(data.train) == 6 and "targets" not in data.train[0]
    assert [(t.name, len(t.items)) for t in data.test_sets()] == [("PA100K-val", 2), ("PA100K", 3)]
    np.testing.assert_array_equal(data.test_sets()[1].items[2]["attributes"], mat["test_label"][2])
    trainval = PA100K(str(tmp_path), test_splits=["test"], trainval=True)
    assert len(trainval.train) == 8
    with pytest.raises(ValueError, match="TRAINVAL"):
        PA100K(str(tmp_path), trainval=True)


def test_attribute_csv_dataset(tmp_path):
    header = "path,hat,age:young|old\n"
    (tmp_path / "train.csv").write_text(header + "a.jpg,1,young\nb.jpg,,old\n")
    (tmp_path / "test.csv").write_text(header + "c.jpg,0,\n")
    data = AttributeCSV(str(tmp_path / "train.csv"), "", str(tmp_path / "test.csv"))
    assert [t.name for t in data.test_sets()] == ["AttributeCSV"]
    assert data.train[1]["attribute_mask"].tolist() == [0.0]
    (tmp_path / "other.csv").write_text("path,bag\nc.jpg,0\n")
    from omnireid.data.datasets import DatasetLayoutError

    with pytest.raises(DatasetLayoutError, match="other attribute columns"):
        AttributeCSV(str(tmp_path / "train.csv"), "", str(tmp_path / "other.csv"))


def _head(groups=(3,), num_classes=0):
    torch.manual_seed(0)
    return AttributeHead(num_attributes=2, attribute_groups=groups, in_channels=8, num_classes=num_classes,
                         with_bnneck=True)


def test_head_outputs_logits_in_training_and_probabilities_in_eval():
    head = _head(num_classes=4)
    fmap = torch.randn(6, 8, 2, 1)
    out = head(fmap, torch.arange(6) % 4)
    assert out["attribute_logits"].shape == (6, 5) and out["cls_outputs"].shape == (6, 4)
    head.eval()
    out = head(fmap)
    probs = out["attributes"]
    assert set(out) == {"features", "logits", "attributes"} and probs.shape == (6, 5)
    logits = head.attribute_logits(out["features"])
    torch.testing.assert_close(probs[:, :2], torch.sigmoid(logits[:, :2]))
    torch.testing.assert_close(probs[:, 2:].sum(1), torch.ones(6))
    with pytest.raises(ValueError, match="no attribute to predict"):
        AttributeHead(num_attributes=0, attribute_groups=(), in_channels=8, num_classes=0)


def test_groups_never_reach_the_bce():
    logits = torch.randn(4, 5, requires_grad=True)
    fields = {"attributes": torch.ones(4, 2), "attribute_mask": torch.ones(4, 2),
              "attribute_groups": torch.tensor([[0], [1], [2], [-1]])}
    bce = BinaryCrossEntropyLoss(2, [0.3, 0.6])
    bce({"attribute_logits": logits}, None, fields).backward()
    assert logits.grad[:, 2:].abs().sum() == 0 and logits.grad[:, :2].abs().sum() > 0
    logits.grad = None
    GroupCrossEntropyLoss(2, [3])({"attribute_logits": logits}, None, fields).backward()
    assert logits.grad[:, :2].abs().sum() == 0 and logits.grad[3].abs().sum() == 0  # row 3: unknown group


def test_evaluator_by_protocol_reports_table_and_csv(tmp_path):
    folder, _ = make_market_attribute(tmp_path)
    cfg = get_cfg()
    test = [t for t in Market1501Attr(str(tmp_path), 0.5).test_sets() if t.name == "Market1501Attr"][0]
    evaluator = build_evaluator(cfg, test, str(tmp_path / "out"))
    labels = np.stack([i["attributes"] for i in test.items])
    groups = np.stack([i["attribute_groups"] for i in test.items])
    scores = np.concatenate([labels * 0.8 + 0.1, np.eye(4)[groups[:, 0]]], 1)  # a perfect prediction
    batch = {"attributes": torch.tensor(labels), "attribute_mask": torch.ones(labels.shape),
             "attribute_groups": torch.tensor(groups), "indices": torch.arange(len(labels))}
    evaluator.process(batch, {"attributes": torch.tensor(scores, dtype=torch.float32)})
    metrics = evaluator.evaluate()
    assert metrics["age_acc"] == 100.0 and metrics["Acc"] == 100.0
    for j, name in enumerate(MARKET_BINARY):  # perfect: TPR 100 where there are positives, TNR 100 negatives
        assert metrics[f"{name}/TPR" if labels[:, j].any() else f"{name}/TNR"] == 100.0
    rows = (tmp_path / "out" / "Market1501Attr_attributes.csv").read_text().splitlines()
    assert rows[0].startswith("attribute,kind,positives") and len(rows) == 1 + len(MARKET_BINARY) + 1


# the demo recipe reads the attribute demo's own people; the tests' tiny set is the reID demo's layout
ON_TINY_SET = ["DATASETS.NAMES", "['SyntheticAttributes']", "DATASETS.TESTS", "['SyntheticAttributes']"]


def _train(root, out, *opts):
    result = _run_train(root, out, *opts)
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f], result


def _run_train(root, out, *opts):
    cmd = [sys.executable, "-m", "omnireid", "train", "--config-file", "configs/Demo/synthetic_attributes_R18.yml",
           "DATASETS.ROOT", root, "OUTPUT_DIR", out, "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCH", "1",
           "TEST.EVAL_PERIOD", "1", "SOLVER.WARMUP_ITERS", "1", "INPUT.SIZE_TRAIN", "[32, 16]",
           "INPUT.SIZE_TEST", "[32, 16]", "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "64", *ON_TINY_SET, *opts]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_dataset_metadata_carries_test_thres(synthetic_root):
    from omnireid.config import setup_cfg
    from omnireid.data import build_train_loader

    cfg = setup_cfg("configs/Demo/synthetic_attributes_R18.yml",
                    ["DATASETS.ROOT", synthetic_root, "TEST.THRES", "0.65", "DATALOADER.NUM_WORKERS", "0", *ON_TINY_SET])
    assert SyntheticAttributes.from_config(cfg).metadata()["attribute_threshold"] == 0.65
    assert build_train_loader(cfg).metadata["attribute_threshold"] == 0.65  # what metadata.json is written from
    with pytest.raises(ValueError, match=r"TEST.THRES must be in \[0, 1\)"):
        SyntheticAttributes(synthetic_root, val_fraction=0.0, test_splits=["test"], threshold=1.0)


@pytest.mark.slow  # a training and a prediction in subprocesses
def test_run_metadata_records_test_thres_and_predict_decides_with_it(synthetic_root, tmp_path):
    """TEST.THRES of the training run reaches metadata.json and the checkpoint, and ``omnireid
    predict`` calls an attribute positive exactly when its probability exceeds it."""
    out = tmp_path / "run"
    _run_train(synthetic_root, str(out), "TEST.THRES", "0.7", "SOLVER.MAX_EPOCH", "0", "SOLVER.MAX_ITER", "2",
           "TEST.EVAL_PERIOD", "0")
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["attribute_threshold"] == 0.7
    assert torch.load(out / "model_final.pth", weights_only=True)["metadata"]["attribute_threshold"] == 0.7
    query = os.path.join(synthetic_root, "Market-1501-v15.09.15", "query")
    images = sorted(os.listdir(query))[:6]
    cmd = [sys.executable, "-m", "omnireid", "predict", *[os.path.join(query, n) for n in images], "--weights",
           str(out / "model_final.pth"), "--output", str(tmp_path / "preds.json")]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads((tmp_path / "preds.json").read_text())
    assert len(records) == 6
    for record in records:
        probabilities = record["attributes"]["probabilities"]
        assert record["attributes"]["positive"] == [n for n, p in probabilities.items() if p > 0.7]


@pytest.mark.slow  # two short trainings in subprocesses
def test_train_attributes_and_joint_reid_attributes(synthetic_root, tmp_path):
    records, _ = _train(synthetic_root, str(tmp_path / "attr"))
    assert [r["dataset"] for r in records] == ["SyntheticAttributes"]
    assert {"mA", "Acc", "Prec", "Rec", "F1", "upper_colour_acc", "hat/mA"} <= set(records[0])
    cfg = json.loads(json.dumps(__import__("yaml").safe_load(open(tmp_path / "attr" / "config.yaml"))))
    assert cfg["MODEL"]["HEADS"]["NUM_ATTRIBUTES"] == 6 and len(cfg["MODEL"]["HEADS"]["ATTRIBUTE_GROUPS"]) == 6
    assert len(cfg["MODEL"]["LOSSES"]["BCE"]["POS_RATIO"]) == 6
    metadata = json.load(open(tmp_path / "attr" / "metadata.json"))
    assert metadata["attribute_names"][:2] == ["short_sleeves", "long_hair"]
    # joint: identity CE + triplet on P x K batches, attributes on the same model, both evaluations
    records, result = _train(synthetic_root, str(tmp_path / "joint"), "MODEL.LOSSES.NAME",
                             "['CrossEntropyLoss', 'TripletLoss', 'BinaryCrossEntropyLoss', 'GroupCrossEntropyLoss']",
                             "DATALOADER.SAMPLER_TRAIN", "NaiveIdentitySampler", "ATTRIBUTES.REID_TEST", "True")
    by_name = {r["dataset"]: r for r in records}
    assert set(by_name) == {"SyntheticAttributes", "SyntheticAttributes-reid"}
    assert "mAP" in by_name["SyntheticAttributes-reid"] and "mA" in by_name["SyntheticAttributes"]
    assert "loss_cls" in result.stdout + result.stderr and "loss_bce" in result.stdout + result.stderr


def test_groups_without_their_loss_is_a_config_error(synthetic_root, tmp_path):
    cmd = [sys.executable, "-m", "omnireid", "train", "--config-file", "configs/Demo/synthetic_attributes_R18.yml",
           "DATASETS.ROOT", synthetic_root, "OUTPUT_DIR", str(tmp_path), "MODEL.LOSSES.NAME",
           "['BinaryCrossEntropyLoss']", "DATALOADER.NUM_WORKERS", "0", *ON_TINY_SET]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "GroupCrossEntropyLoss" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(os.path.dirname(os.path.dirname(__file__)),
                                                                "configs", "Attribute"))))
def test_attribute_recipes_load_and_train_every_attribute(name):
    from omnireid.config import setup_cfg

    cfg = setup_cfg(os.path.join("configs", "Attribute", name))
    assert cfg.MODEL.HEADS.NAME == "AttributeHead"
    assert {"BinaryCrossEntropyLoss", "GroupCrossEntropyLoss"} <= set(cfg.MODEL.LOSSES.NAME)
    assert name.startswith("Base") or cfg.DATASETS.NAMES[0] in DATASET_REGISTRY


def test_attribute_demo_people_live_beside_the_reid_demo(tmp_path, synthetic_root):
    """The attribute demo's people (many identities, one image per camera) are read from their own
    folder, so one DATASETS.ROOT holds both demos' data."""
    from omnireid.data.synthetic import write_synthetic_reid
    from omnireid.engine.demo import DEMO_REGISTRY
    from omnireid.tasks.attributes.datasets import SyntheticAttributePeople
    from omnireid.tasks.attributes.demo import DEMO_PEOPLE

    assert "attributes" in DEMO_REGISTRY
    small = {**DEMO_PEOPLE, "num_train_ids": 10, "num_test_ids": 4}
    write_synthetic_reid(str(tmp_path / "synthetic_attributes"), seed=0, **small)
    os.symlink(os.path.join(synthetic_root, "Market-1501-v15.09.15"), tmp_path / "Market-1501-v15.09.15")
    data = SyntheticAttributePeople(str(tmp_path), val_fraction=0.0, test_splits=["test"])
    assert {i["targets"] for i in data.train} and len({i["targets"] for i in data.train}) == 10
    per_camera = [(i["targets"], i["camids"]) for i in data.train]
    assert len(per_camera) == len(set(per_camera))  # one image per (identity, camera)
    (test,) = data.test_sets()
    assert test.name == "SyntheticAttributePeople" and len({i["targets"] for i in test.items}) == 4
    assert all("synthetic_attributes" in i["img_path"] for i in data.train + test.items)
