"""NAIC list formats, the unlabelled test layout, long-tail identity removal, the NAIC20 recipes."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from fixtures_data import write_image
from omnireid.config import setup_cfg
from omnireid.data import DATASET_REGISTRY, DatasetLayoutError, build_dataset, combine_train_sets
from omnireid.data.build import build_test_sets, build_train_loader
from omnireid.utils.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]
# identity -> number of images (a long tail of one- and two-image identities)
COUNTS = {"0001": 3, "0002": 1, "0003": 2, "0004": 4, "0005": 1}


def _lines(fmt: str, prefix: str = "") -> list[str]:
    names = [(f"{pid}{k:04d}.png", pid) for pid, n in COUNTS.items() for k in range(n)]
    if fmt == "colon":  # NAIC 2020: '<image name>:<pid>'
        return [f"{name}:{pid}" for name, pid in names]
    return [f"{prefix}{name} {pid}" for name, pid in names]  # NAIC 2019: '<relative path> <pid>'


def make_naic20(root: Path, folder: str = "naic/2020_NAIC/chusai/train", with_val: bool = False) -> Path:
    base = root / folder
    for line in _lines("colon"):
        write_image(base / "images" / line.split(":")[0], size=(8, 16))
    (base / "label.txt").write_text("\n".join(_lines("colon")) + "\n")
    if with_val:
        for name in ("q1.png", "g1.png", "g2.png"):
            write_image(base / "images" / name)
        (base / "val_query.txt").write_text("q1.png:7\n")
        (base / "val_gallery.txt").write_text("g1.png:7\ng2.png:8\n")
    return base


def make_naic19(root: Path) -> Path:
    base = root / "naic/2019_NAIC/fusai"
    for line in _lines("space", "train_set/"):
        write_image(base / line.split()[0], size=(8, 16))
    (base / "train_list.txt").write_text("\n".join(_lines("space", "train_set/")) + "\n")
    return base


def _cfg(root: Path, *opts: str):
    return setup_cfg(None, ["DATASETS.ROOT", str(root), *opts])


def test_naic20_colon_list(tmp_path):
    base = make_naic20(tmp_path)
    ds = build_dataset(_cfg(tmp_path), "NAIC20_R1")
    assert len(ds.train) == sum(COUNTS.values())  # every line: no truncation
    first = ds.train[0]
    assert first == {"img_path": str(base / "images" / "00010000.png"), "targets": 1, "camids": 0}
    assert ds.test_sets() == []


def test_naic19_space_list(tmp_path):
    base = make_naic19(tmp_path)
    ds = build_dataset(_cfg(tmp_path), "NAIC19")
    assert sorted({i["targets"] for i in ds.train}) == [1, 2, 3, 4, 5]
    assert ds.train[-1]["img_path"] == str(base / "train_set" / "00050000.png")


def test_naic20_r2_validation_split(tmp_path):
    make_naic20(tmp_path, "naic/2020_NAIC/fusai/train", with_val=True)
    (test_set,) = build_test_sets(_cfg(tmp_path), "NAIC20_R2")
    assert test_set.meta["num_query"] == 1
    assert [(i["targets"], i["camids"]) for i in test_set.items] == [(7, 0), (7, 1), (8, 1)]


@pytest.mark.parametrize("line", ["00010000.png 1", "00010000.png:x", ":3"])
def test_malformed_line_names_file_and_line(tmp_path, line):
    base = make_naic20(tmp_path)
    (base / "label.txt").write_text("00010001.png:1\n" + line + "\n")
    with pytest.raises(DatasetLayoutError, match=r"label.txt, line 2: expected '<image>.png:<pid>'"):
        build_dataset(_cfg(tmp_path), "NAIC20_R1")


def test_missing_dataset_quotes_the_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="label.txt"):
        build_dataset(_cfg(tmp_path), "NAIC20_R1")


def test_unlabelled_test_layout(tmp_path):
    base = tmp_path / "naic/round2/image_A"
    for name in ("b.png", "a.png"):
        write_image(base / "query" / name)
    for name in ("c.png", "d.png", "e.png"):
        write_image(base / "gallery" / name)
    (test_set,) = build_test_sets(_cfg(tmp_path), "NAIC20_R2A")
    assert test_set.meta == {"num_query": 2}
    assert [os.path.basename(i["img_path"]) for i in test_set.items] == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    assert all(set(i) == {"img_path"} for i in test_set.items)


@pytest.mark.parametrize("min_images, kept_ids", [(0, 5), (1, 5), (2, 3), (3, 2), (4, 1)])
def test_long_tail_removal(tmp_path, min_images, kept_ids):
    make_naic20(tmp_path)
    ds = build_dataset(_cfg(tmp_path), "NAIC20_R1")
    items, names, _ = combine_train_sets([ds], combine_all=False, min_images_per_id=min_images)
    expected = {f"{int(p)}" for p, n in COUNTS.items() if n >= max(min_images, 1)}
    assert set(names) == expected and len(names) == kept_ids
    assert len(items) == sum(n for n in COUNTS.values() if n >= max(min_images, 1))
    assert sorted({i["targets"] for i in items}) == list(range(kept_ids))  # relabelled after removal


def test_long_tail_removal_from_the_config(tmp_path):
    make_naic20(tmp_path)
    opts = ["DATASETS.NAMES", "['NAIC20_R1']", "DATASETS.MIN_IMAGES_PER_ID", "2", "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_INSTANCE", "2", "INPUT.SIZE_TRAIN", "[16, 8]"]
    data = build_train_loader(_cfg(tmp_path, *opts))
    assert data.num_classes == 3 and len(data.items) == 9
    with pytest.raises(DatasetError, match="MIN_IMAGES_PER_ID 5 leaves no training identity"):
        build_train_loader(_cfg(tmp_path, *opts[:2], "DATASETS.MIN_IMAGES_PER_ID", "5", *opts[4:]))


def test_fastreid_rm_lt_key(tmp_path):
    path = tmp_path / "naic.yml"
    path.write_text("DATASETS:\n  RM_LT: True\n")
    assert setup_cfg(str(path)).DATASETS.MIN_IMAGES_PER_ID == 2


def test_naic_datasets_registered():
    for name in ("NAIC20_R2", "NAIC20_R1", "NAIC19", "NAIC20_R2A", "NAIC20_R2B"):
        assert name in DATASET_REGISTRY


@pytest.mark.parametrize("path", sorted(glob.glob(str(REPO / "configs" / "NAIC20" / "*.yml"))))
def test_naic20_recipes(path):
    cfg = setup_cfg(path)
    assert cfg.SOLVER.OPT == "Adam" and cfg.MODEL.HEADS.CLS_LAYER == "CircleSoftmax"
    assert cfg.MODEL.HEADS.POOL_LAYER == "GeneralizedMeanPooling" and "Cosface" in cfg.MODEL.LOSSES.NAME
    assert cfg.INPUT.AUGMIX.ENABLED and cfg.DATASETS.MIN_IMAGES_PER_ID == 2
    if "384x192" in path:
        assert list(cfg.INPUT.SIZE_TRAIN) == [384, 192] == list(cfg.INPUT.SIZE_TEST)


def test_augmix_is_a_config_selectable_train_transform():
    from PIL import Image
    from torchvision.transforms import v2

    from omnireid.data.transforms import build_transforms

    cfg = setup_cfg(str(REPO / "configs" / "NAIC20" / "Base-naic.yml"), ["INPUT.SIZE_TRAIN", "[32, 16]",
                                                                         "INPUT.AUGMIX.PROB", "1.0"])
    pipeline = build_transforms(cfg, is_train=True)
    assert any(isinstance(t, v2.AugMix) for t in pipeline.transforms)
    out = pipeline(Image.new("RGB", (20, 40), (200, 30, 30)))
    assert out.dtype.is_floating_point is False and tuple(out.shape) == (3, 32, 16)
    cfg.defrost()
    cfg.INPUT.AUGMIX.ENABLED = False
    assert not any(isinstance(t, v2.AugMix) for t in build_transforms(cfg, is_train=True).transforms)


def test_naic_demo_data_is_read_by_the_naic20_loader(tmp_path):
    """`omnireid demo --task naic` writes NAIC 2020's list layout; NAIC20_R2 reads it back."""
    import omnireid.tasks  # noqa: F401  (registers the demo)
    from omnireid.engine.demo import DEMO_REGISTRY
    from omnireid.tasks.naic.demo import write_synthetic_naic20

    assert "naic" in DEMO_REGISTRY and os.path.isfile(DEMO_REGISTRY.get("naic").config_file)
    folder = tmp_path / "naic" / "2020_NAIC" / "fusai" / "train"
    write_synthetic_naic20(str(folder), seed=0, num_train_ids=3, num_test_ids=3, num_cameras=2,
                           images_per_camera=(1, 2), queries_per_id=1, num_distractors=2, num_junk=2)
    assert sorted(os.listdir(folder)) == ["images", "naic20r2_train_list_clean.txt", "val_gallery.txt",
                                          "val_query.txt"]
    ds = build_dataset(_cfg(tmp_path), "NAIC20_R2")
    assert len({i["targets"] for i in ds.train}) == 3 and len(ds.query) == 3
    assert all(i["targets"] >= 0 for i in ds.gallery) and all(os.path.isfile(i["img_path"]) for i in ds.train)
    cfg = setup_cfg(str(DEMO_REGISTRY.get("naic").config_file))
    assert cfg.DATASETS.NAMES == ["NAIC20_R2"] and cfg.MODEL.HEADS.CLS_LAYER == "CircleSoftmax"
