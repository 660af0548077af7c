"""Each dataset loader against a tiny tree in its exact official layout."""
from __future__ import annotations

import os

import pytest

from omnireid.config.defaults import get_cfg
from omnireid.data import DATASET_REGISTRY, DatasetLayoutError, build_dataset, combine_train_sets
from omnireid.data.datasets import DATASETS_ENV, datasets_root
from omnireid.data.datasets.custom_csv import read_csv_items

from fixtures_data import (make_csv_dataset, make_cuhk03, make_duke, make_market, make_msmt17, make_vehicleid,
                           make_veri, make_veriwild)


def _cfg(root) -> object:
    cfg = get_cfg()
    cfg.DATASETS.ROOT = str(root)
    return cfg


def tuples(items):
    """reID item dicts as (img_path, pid, camid) tuples, for compact expectations."""
    return [(item["img_path"], item["targets"], item["camids"]) for item in items]


def _basenames(items):
    return sorted((os.path.basename(p), pid, cam) for p, pid, cam in tuples(items))


def test_registered_names_follow_fastreid():
    for name in ("Market1501", "DukeMTMC", "MSMT17", "CUHK03", "VeRi", "VehicleID", "SmallVehicleID",
                 "MediumVehicleID", "LargeVehicleID", "VeRiWild", "SmallVeRiWild", "MediumVeRiWild",
                 "LargeVeRiWild", "CustomCSV"):
        assert name in DATASET_REGISTRY


def test_root_resolution(monkeypatch):
    cfg = get_cfg()
    monkeypatch.delenv(DATASETS_ENV, raising=False)
    assert datasets_root(cfg) == "datasets"
    monkeypatch.setenv(DATASETS_ENV, "/env/data")
    assert datasets_root(cfg) == "/env/data"
    cfg.DATASETS.ROOT = "/cfg/data"
    assert datasets_root(cfg) == "/cfg/data"


def test_market1501_protocol(tmp_path):
    make_market(tmp_path)
    ds = build_dataset(_cfg(tmp_path), "Market1501")
    assert _basenames(ds.train) == [
        ("0002_c1s1_000451_03.jpg", 2, 0), ("0002_c2s1_000551_01.jpg", 2, 1), ("0007_c1s1_000601_01.jpg", 7, 0),
        ("0007_c3s2_000700_02.jpg", 7, 2), ("0007_c3s2_000800_02.jpg", 7, 2)]
    assert ds.num_train_pids == 2 and ds.num_train_cams == 3
    assert _basenames(ds.query) == [("0001_c1s1_001051_00.jpg", 1, 0), ("0003_c2s1_000100_00.jpg", 3, 1)]
    # junk (-1) dropped from the gallery (= ignored by the official evaluation), distractors (0) kept
    assert _basenames(ds.gallery) == [("0000_c1s1_000151_01.jpg", 0, 0), ("0001_c2s1_000301_01.jpg", 1, 1),
                                      ("0001_c3s1_000401_01.jpg", 1, 2), ("0003_c1s1_000111_01.jpg", 3, 0)]
    assert all(os.path.isfile(p) for p, _, _ in tuples(ds.train + ds.query + ds.gallery))


def test_market1501_root_is_dataset_folder(tmp_path):
    make_market(tmp_path, nested=False)
    ds = build_dataset(_cfg(tmp_path), "Market1501")
    assert len(ds.train) == 5 and len(ds.gallery) == 4


def test_market1501_env_root(tmp_path, monkeypatch):
    make_market(tmp_path)
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    cfg = get_cfg()
    assert len(build_dataset(cfg, "Market1501").query) == 2


def test_missing_dataset_names_expected_path_and_layout(tmp_path):
    with pytest.raises(DatasetLayoutError) as info:
        build_dataset(_cfg(tmp_path), "Market1501")
    message = str(info.value)
    assert os.path.join(str(tmp_path), "Market-1501-v15.09.15", "bounding_box_train") in message
    assert "bounding_box_test/" in message and "query/" in message


def test_missing_query_folder_is_named(tmp_path):
    folder = make_market(tmp_path)
    for name in os.listdir(folder / "query"):
        os.remove(folder / "query" / name)
    os.rmdir(folder / "query")
    with pytest.raises(DatasetLayoutError, match="query"):
        build_dataset(_cfg(tmp_path), "Market1501")


def test_badly_named_image_is_named(tmp_path):
    folder = make_market(tmp_path)
    (folder / "query" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(DatasetLayoutError, match="holiday.jpg"):
        build_dataset(_cfg(tmp_path), "Market1501")


def test_combineall_removes_junk_and_distractors(tmp_path):
    make_market(tmp_path)
    ds = build_dataset(_cfg(tmp_path), "Market1501")
    items, names, cameras = combine_train_sets([ds], combine_all=True)
    # 5 train + 2 query + 3 gallery (distractor 0 and junk -1 excluded)
    assert len(items) == 10
    assert sorted(names) == ["2", "7", "test_1", "test_3"]
    assert sorted({label for _, label, _ in tuples(items)}) == [0, 1, 2, 3]
    assert len(cameras) == 3  # test images come from the same physical cameras
    assert not any("0000_" in os.path.basename(p) or "-1_" in os.path.basename(p) for p, _, _ in tuples(items))


def test_several_training_sets_are_namespaced(tmp_path):
    make_market(tmp_path)
    make_duke(tmp_path)
    cfg = _cfg(tmp_path)
    market, duke = build_dataset(cfg, "Market1501"), build_dataset(cfg, "DukeMTMC")
    items, names, cameras = combine_train_sets([market, duke], combine_all=False)
    assert len(items) == 9
    assert names == ["DukeMTMC_1", "DukeMTMC_3", "Market1501_2", "Market1501_7"]
    assert cameras == ["DukeMTMC_0", "DukeMTMC_1", "DukeMTMC_4", "DukeMTMC_7", "Market1501_0", "Market1501_1",
                       "Market1501_2"]
    for path, label, cam in tuples(items):
        expected = ("DukeMTMC" if "DukeMTMC-reID" in path else "Market1501") + "_" + str(int(os.path.basename(path)[:4]))
        assert names[label] == expected
        assert cameras[cam].split("_")[0] == expected.split("_")[0]
    with pytest.raises(ValueError, match="more than once"):
        combine_train_sets([market, market], combine_all=False)


def test_duke(tmp_path):
    make_duke(tmp_path)
    ds = build_dataset(_cfg(tmp_path), "DukeMTMC")
    assert _basenames(ds.train)[0] == ("0001_c2_f0046182.jpg", 1, 1)
    assert ds.num_train_pids == 2 and ds.num_train_cams == 4
    assert len(ds.query) == 1 and len(ds.gallery) == 3


@pytest.mark.parametrize("version", ["MSMT17_V1", "MSMT17_V2"])
def test_msmt17_list_files(tmp_path, version):
    make_msmt17(tmp_path, version)
    ds = build_dataset(_cfg(tmp_path), "MSMT17")
    train_dir = "train" if version == "MSMT17_V1" else "mask_train_v2"
    # list_train + list_val; camera = third field of the name, 0-based
    assert sorted((os.path.relpath(p, tmp_path / version), pid, cam) for p, pid, cam in tuples(ds.train)) == [
        (f"{train_dir}/0000/0000_000_01_0303morning_0015_0.jpg", 0, 0),
        (f"{train_dir}/0000/0000_001_05_0303morning_0016_0.jpg", 0, 4),
        (f"{train_dir}/0001/0001_000_14_0303noon_0101_1.jpg", 1, 13),
        (f"{train_dir}/0001/0001_001_02_0303noon_0102_0.jpg", 1, 1)]
    assert [(pid, cam) for _, pid, cam in tuples(ds.query)] == [(0, 2)]
    assert [(pid, cam) for _, pid, cam in tuples(ds.gallery)] == [(0, 14), (1, 2)]
    assert all(os.path.isfile(p) for p, _, _ in tuples(ds.train + ds.query + ds.gallery))


def test_msmt17_bad_list_line(tmp_path):
    folder = make_msmt17(tmp_path)
    (folder / "list_query.txt").write_text("0000/0000_000_03_0303afternoon_0015_0.jpg\n")
    with pytest.raises(DatasetLayoutError, match=r"list_query.txt, line 1"):
        build_dataset(_cfg(tmp_path), "MSMT17")


@pytest.mark.parametrize("labeled", [True, False])
def test_cuhk03_new_protocol(tmp_path, labeled):
    pytest.importorskip("scipy")
    make_cuhk03(tmp_path)
    cfg = _cfg(tmp_path)
    cfg.DATASETS.CUHK03_LABELED = labeled
    ds = build_dataset(cfg, "CUHK03")
    folder = "images_labeled" if labeled else "images_detected"
    assert all(f"{os.sep}{folder}{os.sep}" in p for p, _, _ in tuples(ds.train + ds.query + ds.gallery))
    assert _basenames(ds.train) == [("1_001_1_01.png", 1, 0), ("1_001_2_06.png", 1, 1),
                                    ("1_002_1_01.png", 2, 0), ("1_002_2_07.png", 2, 1)]
    assert _basenames(ds.query) == [("2_010_1_02.png", 10, 0)]
    assert _basenames(ds.gallery) == [("2_010_2_08.png", 10, 1), ("2_010_2_09.png", 10, 1)]


def test_cuhk03_rejects_unknown_split(tmp_path):
    pytest.importorskip("scipy")
    make_cuhk03(tmp_path)
    cfg = _cfg(tmp_path)
    cfg.DATASETS.CUHK03_SPLIT = "classic"
    with pytest.raises(ValueError, match="CUHK03_SPLIT"):
        build_dataset(cfg, "CUHK03")


def test_veri(tmp_path):
    make_veri(tmp_path)
    ds = build_dataset(_cfg(tmp_path), "VeRi")
    assert _basenames(ds.train) == [("0001_c001_00016450_0.jpg", 1, 0), ("0001_c002_00016460_0.jpg", 1, 1),
                                    ("0005_c019_00077010_1.jpg", 5, 18)]
    assert ds.num_train_pids == 2 and ds.num_train_cams == 3
    assert len(ds.query) == 1 and len(ds.gallery) == 3


@pytest.mark.parametrize("name,size,num_ids", [("SmallVehicleID", "small", 2), ("MediumVehicleID", "medium", 3),
                                               ("LargeVehicleID", "large", 4), ("VehicleID", "large", 4)])
def test_vehicleid_protocol(tmp_path, name, size, num_ids):
    make_vehicleid(tmp_path)
    cfg = _cfg(tmp_path)
    cfg.DATASETS.VEHICLEID_TEST_SIZE = size
    ds = build_dataset(cfg, name)
    assert [(os.path.basename(p), pid, cam) for p, pid, cam in tuples(ds.train)] == [
        ("0000001.jpg", 1, 0), ("0000002.jpg", 1, 0), ("0000003.jpg", 4, 0)]
    gallery_ids = [pid for _, pid, _ in tuples(ds.gallery)]
    # one image per vehicle in the gallery, the others are queries
    assert sorted(gallery_ids) == sorted(set(gallery_ids)) and len(gallery_ids) == num_ids
    test_list = (tmp_path / "VehicleID_V1.0" / "train_test_split" /
                 {"small": "test_list_800.txt", "medium": "test_list_1600.txt", "large": "test_list_2400.txt"}[size])
    assert len(ds.query) + len(ds.gallery) == len(test_list.read_text().split("\n")) - 1
    assert {cam for _, _, cam in tuples(ds.query)} == {0} and {cam for _, _, cam in tuples(ds.gallery)} == {1}
    again = build_dataset(cfg, name)
    assert again.gallery == ds.gallery  # seeded split


def test_vehicleid_bad_size(tmp_path):
    make_vehicleid(tmp_path)
    cfg = _cfg(tmp_path)
    cfg.DATASETS.VEHICLEID_TEST_SIZE = "huge"
    with pytest.raises(ValueError, match="VEHICLEID_TEST_SIZE"):
        build_dataset(cfg, "VehicleID")


@pytest.mark.parametrize("name,size,num_query,num_gallery", [("SmallVeRiWild", "small", 1, 3),
                                                            ("MediumVeRiWild", "medium", 2, 4),
                                                            ("LargeVeRiWild", "large", 1, 3),
                                                            ("VeRiWild", "medium", 2, 4)])
def test_veriwild(tmp_path, name, size, num_query, num_gallery):
    make_veriwild(tmp_path)
    cfg = _cfg(tmp_path)
    cfg.DATASETS.VERIWILD_TEST_SIZE = size
    ds = build_dataset(cfg, name)
    assert [(os.path.relpath(p, tmp_path / "VERI-Wild" / "images"), pid, cam) for p, pid, cam in tuples(ds.train)] == [
        ("00001/000001.jpg", 1, 18), ("00001/000002.jpg", 1, 20), ("00002/000010.jpg", 2, 3)]
    assert len(ds.query) == num_query and len(ds.gallery) == num_gallery
    assert all(os.path.isfile(p) for p, _, _ in tuples(ds.train + ds.query + ds.gallery))


def test_veriwild_image_missing_from_vehicle_info(tmp_path):
    folder = make_veriwild(tmp_path)
    (folder / "train_test_split" / "train_list.txt").write_text("00001/000001\n00009/000099\n")
    with pytest.raises(DatasetLayoutError, match=r"train_list.txt, line 2"):
        build_dataset(_cfg(tmp_path), "VeRiWild")


@pytest.mark.parametrize("header", [True, False])
def test_custom_csv(tmp_path, header):
    files = make_csv_dataset(tmp_path, num_ids=3, per_id=2, header=header)
    cfg = get_cfg()
    cfg.DATASETS.CSV.TRAIN, cfg.DATASETS.CSV.QUERY, cfg.DATASETS.CSV.GALLERY = (
        str(files["train"]), str(files["query"]), str(files["gallery"]))
    ds = build_dataset(cfg, "CustomCSV")
    assert len(ds.train) == 6 and ds.num_train_pids == 3
    assert tuples(ds.train)[0] == (str(tmp_path / "images" / "000_0.png"), 0, 0)
    assert [(pid, cam) for _, pid, cam in tuples(ds.query)] == [(100, 0), (101, 0)]
    assert len(ds.gallery) == 4
    assert all(os.path.isfile(p) for p, _, _ in tuples(ds.train + ds.query + ds.gallery))


def test_custom_csv_absolute_paths(tmp_path):
    image = tmp_path / "x.png"
    sub = tmp_path / "lists"
    sub.mkdir()
    (sub / "a.csv").write_text(f"{image},5,2\n\n")
    assert tuples(read_csv_items(str(sub / "a.csv"))) == [(str(image), 5, 2)]


@pytest.mark.parametrize("content,line,needle", [
    ("path,pid,camid\na.jpg,1,0\nb.jpg,two,0\n", 3, "pid must be an integer"),
    ("a.jpg,1,0\nb.jpg,1\n", 2, "expected 3 columns"),
    ("a.jpg,1,0\n\nc.jpg,1,cam3\n", 3, "camid must be an integer"),
    ("a.jpg,1,0,extra\n", 1, "expected 3 columns"),
])
def test_custom_csv_bad_rows_name_file_and_line(tmp_path, content, line, needle):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DatasetLayoutError) as info:
        read_csv_items(str(path))
    assert str(path) in str(info.value) and f"line {line}" in str(info.value) and needle in str(info.value)


def test_custom_csv_needs_query_and_gallery_together(tmp_path):
    files = make_csv_dataset(tmp_path)
    cfg = get_cfg()
    cfg.DATASETS.CSV.TRAIN, cfg.DATASETS.CSV.QUERY = str(files["train"]), str(files["query"])
    with pytest.raises(DatasetLayoutError, match="set together"):
        build_dataset(cfg, "CustomCSV")
    with pytest.raises(DatasetLayoutError, match="not found"):
        read_csv_items(str(tmp_path / "missing.csv"))


def test_unknown_dataset_name_suggests():
    with pytest.raises(KeyError, match="Market1501"):
        build_dataset(get_cfg(), "Market1502")
