"""Transforms, batch dicts, seeded augmentation, resume, corrupt images and clear errors."""
from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from omnireid.config.config import ConfigError
from omnireid.config.defaults import get_cfg
from omnireid.data import (CorruptImageError, EmptyDatasetError, RandomPatch, SamplerError, build_test_loader,
                           build_test_sets, build_train_loader, build_transforms)
from omnireid.data.samplers import InferenceSampler
from omnireid.utils import comm

from fixtures_data import make_csv_dataset, write_image

AUGMENTATIONS = ("FLIP", "PADDING", "CJ", "AFFINE", "AUTOAUG", "AUGMIX", "REA", "RPT")


def _cfg(files, augment: bool = False, workers: int = 0):
    cfg = get_cfg()
    cfg.DATASETS.NAMES = ["CustomCSV"]
    cfg.DATASETS.TESTS = ["CustomCSV"]
    cfg.DATASETS.CSV.TRAIN, cfg.DATASETS.CSV.QUERY, cfg.DATASETS.CSV.GALLERY = (
        str(files["train"]), str(files["query"]), str(files["gallery"]))
    cfg.INPUT.SIZE_TRAIN = [32, 16]
    cfg.INPUT.SIZE_TEST = [24, 12]
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.TEST.IMS_PER_BATCH = 4
    cfg.DATALOADER.NUM_INSTANCE = 2
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SEED = 3
    if augment:
        for key in AUGMENTATIONS:
            cfg.INPUT[key].ENABLED = True
        cfg.INPUT.AUTOAUG.PROB = 0.5
        cfg.INPUT.AUGMIX.PROB = 0.5
    return cfg


def _take(loader, n):
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            return out
    raise AssertionError("loader ended")


@pytest.fixture
def files(tmp_path):
    return make_csv_dataset(tmp_path, num_ids=6, per_id=4)


def test_transform_shapes_and_dtypes(files):
    cfg = _cfg(files, augment=True)
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.SIZE = [20, 10]
    img = Image.new("RGB", (40, 90), (200, 30, 10))
    train = build_transforms(cfg, is_train=True)
    for _ in range(10):
        out = train(img)
        assert out.shape == (3, 20, 10) and out.dtype == torch.uint8
    test = build_transforms(cfg, is_train=False)
    out = test(img)
    assert out.shape == (3, 20, 10) and out.dtype == torch.uint8  # resize to SIZE_TEST then centre crop
    cfg.INPUT.CROP.ENABLED = False
    plain = build_transforms(cfg, is_train=False)(img)
    assert plain.shape == (3, 24, 12)
    assert torch.equal(plain, build_transforms(cfg, is_train=False)(img))
    assert (plain == torch.tensor([200, 30, 10], dtype=torch.uint8).view(3, 1, 1)).all()  # 0-255, not normalised


def test_random_erasing_value_on_255_scale(files):
    cfg = _cfg(files)
    cfg.INPUT.REA.ENABLED, cfg.INPUT.REA.PROB, cfg.INPUT.REA.VALUE = True, 1.0, [1.0, 2.0, 3.0]
    out = build_transforms(cfg, is_train=True)(Image.new("RGB", (16, 32), (200, 200, 200)))
    erased = (out == torch.tensor([1, 2, 3], dtype=torch.uint8).view(3, 1, 1)).all(0)
    assert erased.any() and not erased.all()


def test_bad_interpolation_names_the_key(files):
    cfg = _cfg(files)
    cfg.INPUT.INTERPOLATION = "bicubik"
    with pytest.raises(ConfigError, match="INPUT.INTERPOLATION"):
        build_transforms(cfg, is_train=True)


def test_random_patch_pastes_from_another_image():
    red = torch.zeros(3, 32, 16, dtype=torch.uint8)
    red[0] = 255
    blue = torch.zeros(3, 32, 16, dtype=torch.uint8)
    blue[2] = 255
    batch = torch.stack([red, blue])
    before = batch.clone()
    out = RandomPatch(prob=1.0, prob_flip=0.0)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(batch, before)  # input untouched
    assert (out[0, 2] == 255).any() and (out[0, 0] == 255).any()  # red image got a blue patch
    assert (out[1, 0] == 255).any() and (out[1, 2] == 255).any()
    again = RandomPatch(prob=1.0, prob_flip=0.0)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(RandomPatch(prob=0.0)(batch, torch.Generator()), batch)


def test_train_batch_dict(files):
    data = build_train_loader(_cfg(files))
    assert data.num_classes == 6 and data.num_cameras == 3 and data.iters_per_epoch == 24 // 8
    assert data.ims_per_rank == 8 and len(data.items) == 24
    for batch in _take(data.loader, 5):
        assert set(batch) == {"images", "targets", "camids", "img_paths"}
        assert batch["images"].shape == (8, 3, 32, 16) and batch["images"].dtype == torch.uint8
        assert type(batch["images"]) is torch.Tensor
        assert batch["targets"].dtype == torch.int64 and batch["camids"].dtype == torch.int64
        assert len(batch["img_paths"]) == 8
        targets = batch["targets"].tolist()
        assert all(targets[i] == targets[i + 1] for i in range(0, 8, 2))  # K = 2
        for path, target, camid in zip(batch["img_paths"], targets, batch["camids"].tolist()):
            assert data.label_names.index(str(int(path.rsplit("/", 1)[1][:3]))) == target
            assert camid == int(path.rsplit("_", 1)[1][0]) % 3


def test_augmentation_is_reproducible_across_workers_and_processes(files, monkeypatch):
    cfg = _cfg(files, augment=True)
    reference = _take(build_train_loader(cfg).loader, 3)
    with_workers = _take(build_train_loader(_cfg(files, augment=True, workers=2)).loader, 3)
    for a, b in zip(reference, with_workers):
        assert torch.equal(a["images"], b["images"]) and a["img_paths"] == b["img_paths"]
    other_seed = _cfg(files, augment=True)
    other_seed.SEED = 4
    assert not torch.equal(_take(build_train_loader(other_seed).loader, 1)[0]["images"], reference[0]["images"])

    # two simulated ranks: their per-rank batches concatenate to the single-process batch
    cfg.INPUT.RPT.ENABLED = False  # random patch mixes images within a process's batch
    reference = _take(build_train_loader(cfg).loader, 3)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    halves = []
    for rank in range(2):
        monkeypatch.setattr(comm, "get_rank", lambda rank=rank: rank)
        halves.append(_take(build_train_loader(cfg).loader, 3))
    for i, full in enumerate(reference):
        assert torch.equal(torch.cat([halves[0][i]["images"], halves[1][i]["images"]]), full["images"])
        assert halves[0][i]["img_paths"] + halves[1][i]["img_paths"] == full["img_paths"]


def test_start_index_resumes_mid_epoch(files):
    cfg = _cfg(files, augment=True)
    full = _take(build_train_loader(cfg).loader, 5)
    resumed = _take(build_train_loader(cfg, start_index=3 * 8).loader, 2)
    for a, b in zip(full[3:], resumed):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["targets"], b["targets"])


def test_test_loader(files):
    (test_set,) = build_test_sets(_cfg(files), "CustomCSV")
    assert test_set.name == "CustomCSV" and test_set.protocol == "reid" and test_set.meta == {"num_query": 2}
    loader = build_test_loader(_cfg(files), test_set)
    batches = list(loader)
    assert torch.cat([b["indices"] for b in batches]).tolist() == list(range(6))
    assert torch.cat([b["targets"] for b in batches]).tolist() == [100, 101, 100, 100, 101, 101]
    assert batches[0]["images"].shape == (4, 3, 24, 12) and batches[0]["images"].dtype == torch.uint8
    assert isinstance(loader.sampler, InferenceSampler)


def test_corrupt_image_error_names_the_file(files, tmp_path):
    bad = tmp_path / "images" / "002_1.png"
    bad.write_bytes(b"this is not a png")
    cfg = _cfg(files)
    cfg.SOLVER.IMS_PER_BATCH = 24
    cfg.DATALOADER.NUM_INSTANCE = 4
    cfg.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
    with pytest.raises(CorruptImageError, match=str(bad)):
        next(iter(build_train_loader(cfg).loader))


def test_skip_corrupt_replaces_with_same_identity(files, tmp_path, caplog):
    bad = tmp_path / "images" / "002_1.png"
    bad.write_bytes(b"\x89PNG truncated")
    cfg = _cfg(files)
    cfg.DATASETS.SKIP_CORRUPT = True
    cfg.SOLVER.IMS_PER_BATCH = 24
    cfg.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
    data = build_train_loader(cfg)
    with caplog.at_level(logging.WARNING):
        batch = next(iter(data.loader))
    assert str(bad) not in batch["img_paths"] and len(batch["img_paths"]) == 24
    by_label = {item["targets"]: item["img_path"] for item in data.items}
    for path, target in zip(batch["img_paths"], batch["targets"].tolist()):
        assert path.rsplit("/", 1)[1][:3] == by_label[target].rsplit("/", 1)[1][:3]  # same identity
    assert sum("002_1.png" in p for p in batch["img_paths"]) == 0
    assert "skipping unreadable image" in caplog.text and str(bad) in caplog.text


def test_skip_corrupt_filters_test_set(files, tmp_path, caplog):
    (tmp_path / "test" / "101_2.png").write_bytes(b"garbage")
    cfg = _cfg(files)
    with pytest.raises(CorruptImageError, match="101_2.png"):
        list(build_test_loader(cfg, build_test_sets(cfg, "CustomCSV")[0]))
    cfg.DATASETS.SKIP_CORRUPT = True
    with caplog.at_level(logging.WARNING):
        (test_set,) = build_test_sets(cfg, "CustomCSV")
    loader = build_test_loader(cfg, test_set)
    assert test_set.meta["num_query"] == 2 and sum(len(b["img_paths"]) for b in loader) == 5
    assert "skipped 1 unreadable images" in caplog.text


def test_too_few_identities_for_pk(files):
    cfg = _cfg(files)
    cfg.SOLVER.IMS_PER_BATCH = 64
    cfg.DATALOADER.NUM_INSTANCE = 4
    with pytest.raises(SamplerError, match="6 identities, fewer than the 16"):
        build_train_loader(cfg)


def test_empty_training_set(tmp_path):
    files = make_csv_dataset(tmp_path)
    files["train"].write_text("path,pid,camid\n")
    with pytest.raises(EmptyDatasetError, match="empty"):
        build_train_loader(_cfg(files))


def test_empty_query_set(tmp_path):
    files = make_csv_dataset(tmp_path)
    files["query"].write_text("path,pid,camid\n")
    with pytest.raises(EmptyDatasetError, match="query set is empty"):
        build_test_sets(_cfg(files), "CustomCSV")


def test_missing_image_is_a_clear_error(tmp_path):
    files = make_csv_dataset(tmp_path)
    write_image(tmp_path / "images" / "unused.png")
    (tmp_path / "images" / "000_0.png").unlink()
    cfg = _cfg(files)
    cfg.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
    cfg.SOLVER.IMS_PER_BATCH = 24
    with pytest.raises(CorruptImageError, match="000_0.png"):
        next(iter(build_train_loader(cfg).loader))


def test_worker_count_is_capped_to_the_cores_with_a_note():
    import logging
    import os

    from omnireid.data.build import loader_workers

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("omnireid.data.build")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        cores = len(os.sched_getaffinity(0))
        assert loader_workers(cores + 6) == cores and loader_workers(0) == 0 and loader_workers(1) == 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert f"DATALOADER.NUM_WORKERS {cores + 6} is more than the {cores} CPU cores available: using {cores}" in messages
