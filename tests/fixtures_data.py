"""Tiny dataset trees in the exact official layouts, written into a test's tmp_path."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, colour: tuple[int, int, int] = (120, 60, 30), size: tuple[int, int] = (8, 16)) -> Path:
    """A small solid-colour image (JPEG or PNG from the suffix); size is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _touch_images(folder: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        write_image(folder / name, colour=(10 * i % 256, 40, 200))


# Market-1501 ------------------------------------------------------------------------------------
MARKET_TRAIN = ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c1s1_000601_01.jpg",
                "0007_c3s2_000700_02.jpg", "0007_c3s2_000800_02.jpg"]
MARKET_QUERY = ["0001_c1s1_001051_00.jpg", "0003_c2s1_000100_00.jpg"]
MARKET_GALLERY = ["0001_c2s1_000301_01.jpg", "0001_c3s1_000401_01.jpg", "0003_c1s1_000111_01.jpg",
                  "0000_c1s1_000151_01.jpg", "-1_c1s1_000401_03.jpg", "-1_c2s1_000402_03.jpg"]


def make_market(root: Path, nested: bool = True) -> Path:
    """``root/Market-1501-v15.09.15/...`` (or the layout directly in ``root``), with a Thumbs.db."""
    folder = root / "Market-1501-v15.09.15" if nested else root
    _touch_images(folder / "bounding_box_train", MARKET_TRAIN)
    _touch_images(folder / "query", MARKET_QUERY)
    _touch_images(folder / "bounding_box_test", MARKET_GALLERY)
    (folder / "bounding_box_train" / "Thumbs.db").write_bytes(b"\x00\x01")
    return folder


def make_duke(root: Path) -> Path:
    folder = root / "DukeMTMC-reID"
    _touch_images(folder / "bounding_box_train", ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg",
                                                  "0003_c1_f0044158.jpg", "0003_c8_f0060009.jpg"])
    _touch_images(folder / "query", ["0005_c2_f0046985.jpg"])
    _touch_images(folder / "bounding_box_test", ["0005_c5_f0051781.jpg", "0005_c7_f0051780.jpg", "0004_c1_f0044300.jpg"])
    return folder


def make_msmt17(root: Path, version: str = "MSMT17_V1") -> Path:
    folder = root / version
    train_dir, test_dir = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}[version]
    lists = {
        "list_train.txt": ("0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_05_0303morning_0016_0.jpg 0",
                           "0001/0001_000_14_0303noon_0101_1.jpg 1"),
        "list_val.txt": ("0001/0001_001_02_0303noon_0102_0.jpg 1",),
        "list_query.txt": ("0000/0000_000_03_0303afternoon_0015_0.jpg 0",),
        "list_gallery.txt": ("0000/0000_001_15_0303afternoon_0016_0.jpg 0", "0001/0001_000_03_0303afternoon_0017_0.jpg 1"),
    }
    for name, lines in lists.items():
        image_dir = folder / (train_dir if name in ("list_train.txt", "list_val.txt") else test_dir)
        _touch_images(image_dir, [line.split()[0] for line in lines])
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def make_cuhk03(root: Path) -> Path:
    """``root/cuhk03`` with images_labeled/, images_detected/ and the new-protocol .mat split files."""
    from scipy.io import savemat

    folder = root / "cuhk03"
    names = ["1_001_1_01.png", "1_001_2_06.png", "1_002_1_01.png", "1_002_2_07.png",
             "2_010_1_02.png", "2_010_2_08.png", "2_010_2_09.png"]
    labels = [1, 1, 2, 2, 10, 10, 10]
    for kind in ("labeled", "detected"):
        _touch_images(folder / f"images_{kind}", names)
        filelist = np.empty((len(names), 1), dtype=object)
        for i, name in enumerate(names):
            filelist[i, 0] = name
        savemat(str(folder / f"cuhk03_new_protocol_config_{kind}.mat"), {
            "filelist": filelist,
            "labels": np.asarray(labels, dtype=np.float64).reshape(-1, 1),
            "camId": np.asarray([int(n.split("_")[2]) for n in names], dtype=np.float64).reshape(-1, 1),
            "train_idx": np.asarray([1, 2, 3, 4], dtype=np.float64).reshape(-1, 1),
            "query_idx": np.asarray([5], dtype=np.float64).reshape(-1, 1),
            "gallery_idx": np.asarray([6, 7], dtype=np.float64).reshape(-1, 1),
        })
    return folder


def make_veri(root: Path) -> Path:
    folder = root / "VeRi"
    _touch_images(folder / "image_train", ["0001_c001_00016450_0.jpg", "0001_c002_00016460_0.jpg",
                                           "0005_c019_00077010_1.jpg"])
    _touch_images(folder / "image_query", ["0002_c002_00030600_0.jpg"])
    _touch_images(folder / "image_test", ["0002_c003_00084280_0.jpg", "0002_c020_00084300_1.jpg", "0004_c003_00084290_0.jpg"])
    (folder / "name_train.txt").write_text("0001_c001_00016450_0.jpg\n")  # official extra files are ignored
    return folder


def make_vehicleid(root: Path) -> Path:
    folder = root / "VehicleID_V1.0"
    split = folder / "train_test_split"
    split.mkdir(parents=True)
    train = [("0000001", 1), ("0000002", 1), ("0000003", 4)]
    test = {800: [("0001001", 7), ("0001002", 7), ("0001003", 7), ("0001004", 9), ("0001005", 9)],
            1600: [("0001001", 7), ("0001002", 7), ("0001004", 9), ("0001005", 9), ("0001006", 11), ("0001007", 11)],
            2400: [("0001001", 7), ("0001002", 7), ("0001004", 9), ("0001005", 9), ("0001006", 11),
                   ("0001007", 11), ("0001008", 12), ("0001009", 12), ("0001010", 12)]}
    (split / "train_list.txt").write_text("".join(f"{i} {v}\n" for i, v in train))
    for size, rows in test.items():
        (split / f"test_list_{size}.txt").write_text("".join(f"{i} {v}\n" for i, v in rows))
    names = sorted({i for i, _ in train} | {i for rows in test.values() for i, _ in rows})
    _touch_images(folder / "image", [f"{n}.jpg" for n in names])
    return folder


def make_veriwild(root: Path) -> Path:
    folder = root / "VERI-Wild"
    split = folder / "train_test_split"
    split.mkdir(parents=True)
    cameras = {"00001/000001": 18, "00001/000002": 20, "00002/000010": 3, "00003/000020": 5, "00003/000021": 7,
               "00003/000022": 5, "00004/000030": 1, "00004/000031": 2}
    (split / "vehicle_info.txt").write_text(
        "id/image;Camera ID;Time;Model;Type;Color\n"
        + "".join(f"{key};{cam:03d};2018-03-11 12:09:23;Chevrolet;SUV;white\n" for key, cam in cameras.items()))
    (split / "train_list.txt").write_text("00001/000001\n00001/000002\n00002/000010\n")
    for size, query, gallery in ((3000, ["00003/000020"], ["00003/000020", "00003/000021", "00003/000022"]),
                                 (5000, ["00003/000020", "00004/000030"], ["00003/000020", "00003/000021",
                                                                           "00004/000030", "00004/000031"]),
                                 (10000, ["00004/000031"], ["00004/000030", "00004/000031", "00003/000021"])):
        (split / f"test_{size}_query.txt").write_text("".join(q + "\n" for q in query))
        (split / f"test_{size}.txt").write_text("".join(g + "\n" for g in gallery))
    for key in cameras:
        write_image(folder / "images" / f"{key}.jpg")
    return folder


def make_csv_dataset(root: Path, num_ids: int = 6, per_id: int = 4, header: bool = True) -> dict[str, Path]:
    """Images of ``num_ids`` identities (distinct colours) and train/query/gallery CSV lists."""
    rng = np.random.default_rng(0)
    rows: dict[str, list[str]] = {"train": [], "query": [], "gallery": []}
    for pid in range(num_ids):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        for k in range(per_id):
            rel = os.path.join("images", f"{pid:03d}_{k}.png")
            write_image(root / rel, colour=colour, size=(16, 32))
            rows["train"].append(f"{rel},{pid},{k % 3}")
    for pid in (100, 101):
        for k in range(3):
            rel = os.path.join("test", f"{pid}_{k}.png")
            write_image(root / rel, colour=(pid, 10 * k, 50), size=(16, 32))
            rows["query" if k == 0 else "gallery"].append(f"{rel},{pid},{k}")
    out = {}
    for split, lines in rows.items():
        path = root / f"{split}.csv"
        path.write_text(("path,pid,camid\n" if header else "") + "\n".join(lines) + "\n")
        out[split] = path
    return out
