"""Retrieval and classification loaders against fixture trees in each dataset's official layout."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import omnireid.tasks  # noqa: F401  (registers the task datasets)
from omnireid.config import get_cfg
from omnireid.data.datasets import build_dataset
from omnireid.data.datasets.bases import DatasetLayoutError


def jpg(path: str, value: int = 0) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), (value, 10, 20)).save(path)


def cfg_for(root, *opts):
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.ROOT", str(root), *opts])
    return cfg


def labels(items):
    return [item["targets"] for item in items]


def test_cub(tmp_path):
    folder = tmp_path / "CUB_200_2011"
    rows = [(1, "001.Black_footed_Albatross/a.jpg", 1), (2, "001.Black_footed_Albatross/b.jpg", 1),
            (3, "100.Brown_Pelican/c.jpg", 100), (4, "101.White_Pelican/d.jpg", 101),
            (5, "200.Common_Yellowthroat/e.jpg", 200), (6, "200.Common_Yellowthroat/f.jpg", 200)]
    folder.mkdir()
    (folder / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, _ in rows))
    (folder / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c in rows))
    (folder / "classes.txt").write_text("1 001.Black_footed_Albatross\n100 100.Brown_Pelican\n"
                                        "101 101.White_Pelican\n200 200.Common_Yellowthroat\n")
    for _, p, _ in rows:
        jpg(str(folder / "images" / p))
    ds = build_dataset(cfg_for(tmp_path), "CUB")
    assert labels(ds.train) == [1, 1, 100] and labels(ds.test) == [101, 200, 200]
    assert ds.train[0]["img_path"] == str(folder / "images" / "001.Black_footed_Albatross" / "a.jpg")
    assert ds.label_name(100) == "100.Brown_Pelican"
    (test,) = ds.test_sets()
    assert test.protocol == "retrieval" and "num_query" not in test.meta
    assert test.meta["recall_ks"] == [1, 2, 4, 8]
    assert all(os.path.isfile(item["img_path"]) for item in ds.train + ds.test)
    (folder / "image_class_labels.txt").write_text("1 one\n")
    with pytest.raises(DatasetLayoutError, match="image_class_labels.txt, line 1"):
        build_dataset(cfg_for(tmp_path), "CUB")


def write_cars_annos(path, records, num_classes=196):
    from scipy.io import savemat

    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annotations = np.empty((1, len(records)), dtype=[(f, "O") for f in fields])
    for i, (rel, cls, test) in enumerate(records):
        annotations[0, i] = (rel, *(np.array([[v]], dtype=np.uint16) for v in (10, 20, 300, 200)),
                             np.array([[cls]], dtype=np.uint8), np.array([[test]], dtype=np.uint8))
    names = np.empty((1, num_classes), dtype=object)
    for c in range(num_classes):
        names[0, c] = f"Model {c + 1} 2012"
    savemat(path, {"annotations": annotations, "class_names": names})


def test_cars196(tmp_path):
    pytest.importorskip("scipy")
    folder = tmp_path / "Cars196"
    folder.mkdir()
    records = [("car_ims/000001.jpg", 1, 0), ("car_ims/000002.jpg", 98, 1), ("car_ims/000003.jpg", 99, 0),
               ("car_ims/000004.jpg", 196, 1), ("car_ims/000005.jpg", 196, 0)]
    write_cars_annos(str(folder / "cars_annos.mat"), records)
    for rel, _, _ in records:
        jpg(str(folder / rel))
    ds = build_dataset(cfg_for(tmp_path), "Cars196")
    # retrieval split by class (1-98 / 99-196), whatever the classification 'test' flag says
    assert labels(ds.train) == [1, 98] and labels(ds.test) == [99, 196, 196]
    assert ds.test[0]["img_path"] == str(folder / "car_ims" / "000003.jpg")
    assert ds.label_name(99) == "Model 99 2012"
    # DATASETS.ROOT may also be the dataset folder itself
    assert labels(build_dataset(cfg_for(folder), "Cars196").test) == [99, 196, 196]
    (folder / "cars_annos.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetLayoutError, match="cars_annos.mat"):
        build_dataset(cfg_for(tmp_path), "Cars196")


def test_sop(tmp_path):
    folder = tmp_path / "Stanford_Online_Products"
    folder.mkdir()
    header = "image_id class_id super_class_id path\n"
    (folder / "Ebay_train.txt").write_text(header + "1 1 1 bicycle_final/111085122871_0.JPG\n"
                                           "2 1 1 bicycle_final/111085122871_1.JPG\n3 2 2 chair_final/2_0.JPG\n")
    (folder / "Ebay_test.txt").write_text(header + "1 11319 1 bicycle_final/9_0.JPG\n2 11319 1 bicycle_final/9_1.JPG\n")
    ds = build_dataset(cfg_for(tmp_path), "SOP")
    assert labels(ds.train) == [1, 1, 2] and labels(ds.test) == [11319, 11319]
    assert ds.train[2]["img_path"] == str(folder / "chair_final" / "2_0.JPG")
    (test,) = ds.test_sets()
    assert test.meta["recall_ks"] == [1, 10, 20, 30]
    (folder / "Ebay_test.txt").write_text(header + "1 x 1 a.JPG\n")
    with pytest.raises(DatasetLayoutError, match="Ebay_test.txt, line 2"):
        build_dataset(cfg_for(tmp_path), "SOP")


@pytest.mark.parametrize("official_zip_layout", [False, True])
def test_inshop(tmp_path, official_zip_layout):
    folder = tmp_path / ("In-shop Clothes Retrieval Benchmark" if official_zip_layout else "InShop")
    list_dir = folder / "Eval" if official_zip_layout else folder
    image_root = folder / "Img" if official_zip_layout else folder
    list_dir.mkdir(parents=True)
    rows = [("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
            ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
            ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "query"),
            ("img/MEN/Denim/id_00000080/01_2_side.jpg", "id_00000080", "gallery"),
            ("img/MEN/Denim/id_00000081/01_1_front.jpg", "id_00000081", "gallery")]
    text = f"{len(rows)}\nimage_name item_id evaluation_status\n" + "".join(f"{p}   {i} {s}\n" for p, i, s in rows)
    (list_dir / "list_eval_partition.txt").write_text(text)
    for p, _, _ in rows:
        jpg(str(image_root / p))
    ds = build_dataset(cfg_for(tmp_path), "InShop")
    assert labels(ds.train) == [2, 2]
    (test,) = ds.test_sets()
    assert test.meta["num_query"] == 1 and labels(test.items) == [80, 80, 81]
    assert test.items[0]["img_path"] == str(image_root / rows[2][0])
    assert all(os.path.isfile(item["img_path"]) for item in test.items)
    assert ds.label_name(2) == "id_00000002"


def test_retrieval_csv(tmp_path):
    (tmp_path / "train.csv").write_text("path,label\nimgs/a.jpg,lamp\nimgs/b.jpg,lamp\n/abs/c.jpg,sofa\n")
    (tmp_path / "test.csv").write_text("imgs/d.jpg,desk\nimgs/e.jpg,desk\nimgs/f.jpg,lamp\n")
    cfg = cfg_for(tmp_path, "RETRIEVAL.CSV.TRAIN", str(tmp_path / "train.csv"), "RETRIEVAL.CSV.TEST",
                  str(tmp_path / "test.csv"))
    ds = build_dataset(cfg, "RetrievalCSV")
    assert [ds.label_name(t) for t in labels(ds.train)] == ["lamp", "lamp", "sofa"]
    assert ds.train[0]["img_path"] == str(tmp_path / "imgs" / "a.jpg") and ds.train[2]["img_path"] == "/abs/c.jpg"
    (test,) = ds.test_sets()
    assert "num_query" not in test.meta and [ds.label_name(t) for t in labels(test.items)] == ["desk", "desk", "lamp"]
    (tmp_path / "query.csv").write_text("q.jpg,desk\n")
    cfg = cfg_for(tmp_path, "RETRIEVAL.CSV.QUERY", str(tmp_path / "query.csv"), "RETRIEVAL.CSV.GALLERY",
                  str(tmp_path / "test.csv"))
    (test,) = build_dataset(cfg, "RetrievalCSV").test_sets()
    assert test.meta["num_query"] == 1 and len(test.items) == 4
    (tmp_path / "bad.csv").write_text("a.jpg,lamp,extra\n")
    cfg = cfg_for(tmp_path, "RETRIEVAL.CSV.TEST", str(tmp_path / "bad.csv"))
    with pytest.raises(DatasetLayoutError, match="bad.csv, line 1: expected 2 columns"):
        build_dataset(cfg, "RetrievalCSV")


def test_image_folder(tmp_path):
    for split, cls, name in [("train", "cat", "1.jpg"), ("train", "cat", "sub/2.png"), ("train", "dog", "3.jpg"),
                             ("train", "ant", "4.jpeg"), ("val", "dog", "5.jpg"), ("val", "ant", "6.jpg")]:
        jpg(str(tmp_path / split / cls / name))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    ds = build_dataset(cfg_for(tmp_path), "ImageFolder")
    assert ds.class_names == ["ant", "cat", "dog"]  # sorted folder names, as torchvision's ImageFolder
    assert labels(ds.train) == [0, 1, 1, 2] and labels(ds.test) == [0, 2]
    (test,) = ds.test_sets()
    assert test.protocol == "classification" and test.meta["class_names"] == ["ant", "cat", "dog"]
    assert ds.metadata()["class_names"] == ["ant", "cat", "dog"]
    jpg(str(tmp_path / "val" / "bee" / "7.jpg"))
    with pytest.raises(DatasetLayoutError, match=r"classes that .* lacks: \['bee'\]"):
        build_dataset(cfg_for(tmp_path), "ImageFolder")
    os.makedirs(tmp_path / "other" / "empty_class")
    jpg(str(tmp_path / "other" / "full" / "8.jpg"))
    cfg = cfg_for(tmp_path, "CLASSIFICATION.FOLDER.TRAIN", "other", "CLASSIFICATION.FOLDER.TEST", "")
    with pytest.raises(DatasetLayoutError, match=r"without training images: \['empty_class'\]"):
        build_dataset(cfg, "ImageFolder")


def test_classification_csv_class_order(tmp_path):
    (tmp_path / "train.csv").write_text("path,label\na.jpg,zebra\nb.jpg,ant\nc.jpg,zebra\nd.jpg,moth\n")
    (tmp_path / "test.csv").write_text("e.jpg,moth\nf.jpg,zebra\n")
    files = ["CLASSIFICATION.CSV.TRAIN", str(tmp_path / "train.csv"), "CLASSIFICATION.CSV.TEST", str(tmp_path / "test.csv")]
    ds = build_dataset(cfg_for(tmp_path, *files), "ClassificationCSV")
    assert ds.class_names == ["zebra", "ant", "moth"]  # order of first appearance in the training list
    assert labels(ds.train) == [0, 1, 0, 2] and labels(ds.test) == [2, 0]
    (tmp_path / "classes.txt").write_text("ant\nmoth\nzebra\n")
    ds = build_dataset(cfg_for(tmp_path, *files, "CLASSIFICATION.CSV.CLASSES", str(tmp_path / "classes.txt")),
                       "ClassificationCSV")
    assert ds.class_names == ["ant", "moth", "zebra"] and labels(ds.train) == [2, 0, 2, 1]
    (tmp_path / "train.csv").write_text("a.jpg,1\nb.jpg,0\nc.jpg,2\n")
    (tmp_path / "test.csv").write_text("e.jpg,2\n")
    ds = build_dataset(cfg_for(tmp_path, *files), "ClassificationCSV")
    assert ds.class_names == ["0", "1", "2"] and labels(ds.train) == [1, 0, 2]
    (tmp_path / "test.csv").write_text("e.jpg,beetle\n")
    with pytest.raises(DatasetLayoutError, match="label 'beetle' is not one of the 3 classes"):
        build_dataset(cfg_for(tmp_path, *files), "ClassificationCSV")
