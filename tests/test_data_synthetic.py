"""The built-in synthetic dataset: deterministic, Market-1501 layout, attributes, CLI."""
from __future__ import annotations

import csv
import os
import re

import pytest
from PIL import Image

from omnireid.cli.main import main
from omnireid.config.defaults import get_cfg
from omnireid.data import build_dataset
from omnireid.data.synthetic import ATTRIBUTE_COLUMNS, write_synthetic_reid

SMALL = dict(num_train_ids=5, num_test_ids=4, num_cameras=3, num_distractors=3, num_junk=2)
MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")


def _files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = write_synthetic_reid(str(root), seed=0, **SMALL)
    return root, summary


def test_same_seed_same_bytes_different_seed_differs(synth, tmp_path):
    root, _ = synth
    again = tmp_path / "again"
    write_synthetic_reid(str(again), seed=0, workers=2, **SMALL)  # multiprocess rendering, same bytes
    assert _files(root) == _files(again)
    other = tmp_path / "other"
    write_synthetic_reid(str(other), seed=1, **SMALL)
    a, b = _files(root), _files(other)
    assert a != b
    shared = set(a) & set(b) - {"README.txt"}
    assert not any(a[k] == b[k] for k in shared if k.endswith(".jpg"))


def test_market_layout_and_names(synth):
    root, summary = synth
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        names = os.listdir(root / folder)
        assert names and all(MARKET_NAME.match(n) for n in names), folder
    with Image.open(next((root / "query").iterdir())) as img:
        assert img.size == (64, 128) and img.mode == "RGB"
    gallery = os.listdir(root / "bounding_box_test")
    assert sum(n.startswith("0000_") for n in gallery) == 3
    assert sum(n.startswith("-1_") for n in gallery) == 2
    assert summary.num_gallery_images == len(gallery)


def test_read_by_the_market1501_loader(synth):
    root, summary = synth
    cfg = get_cfg()
    cfg.DATASETS.ROOT = str(root)
    ds = build_dataset(cfg, "Market1501")
    assert ds.num_train_pids == 5 and len(ds.train) == summary.num_train_images
    assert ds.num_train_cams <= 3
    assert len(ds.query) == summary.num_query_images
    assert len(ds.gallery) == summary.num_gallery_images - 2  # junk dropped
    train_pids = {item["targets"] for item in ds.train}
    query_pids = {item["targets"] for item in ds.query}
    assert len(query_pids) == 4 and not train_pids & query_pids
    # every query has a true match in another camera (the protocol can score it)
    for query in ds.query:
        assert any(g["targets"] == query["targets"] and g["camids"] != query["camids"] for g in ds.gallery)


def test_attributes_file(synth):
    root, _ = synth
    with open(root / "attributes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == ATTRIBUTE_COLUMNS
    assert len(rows) == 9 and len({r["pid"] for r in rows}) == 9
    assert {r["split"] for r in rows} == {"train", "test"}
    pids_on_disk = {int(n[:4]) for n in os.listdir(root / "bounding_box_train")}
    assert pids_on_disk == {int(r["pid"]) for r in rows if r["split"] == "train"}
    for row in rows:
        assert row["hat"] in ("0", "1") and row["body_type"] in ("slim", "broad")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_cameras"):
        write_synthetic_reid(str(tmp_path / "a"), num_cameras=10)
    stray = tmp_path / "b" / "query"
    stray.mkdir(parents=True)
    (stray / "0001_c1s1_000001_01.jpg").write_bytes(b"old")
    with pytest.raises(OSError, match="empty folder"):
        write_synthetic_reid(str(tmp_path / "b"), **SMALL)


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["data", "synth", "--out", str(out), "--seed", "2", "--train-ids", "3", "--test-ids", "2",
                 "--cameras", "2"]) == 0
    assert "DATASETS.ROOT" in capsys.readouterr().out
    cfg = get_cfg()
    cfg.DATASETS.ROOT = str(out)
    assert build_dataset(cfg, "Market1501").num_train_pids == 3


@pytest.mark.slow
def test_default_size_is_fast_and_complete(tmp_path):
    import time

    start = time.process_time()  # CPU time of this process: robust to a busy machine
    summary = write_synthetic_reid(str(tmp_path), seed=0, workers=1)
    assert time.process_time() - start < 60
    cfg = get_cfg()
    cfg.DATASETS.ROOT = str(tmp_path)
    ds = build_dataset(cfg, "Market1501")
    assert ds.num_train_pids == 200 and ds.num_train_cams == 6
    assert len({p for _, p, _ in ds.query}) == 200
    assert len(ds.train) == summary.num_train_images > 2000
