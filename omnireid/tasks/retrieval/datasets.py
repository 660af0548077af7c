"""Fine-grained retrieval benchmarks in their official layouts, and retrieval CSV lists.

Items are ``{"img_path", "targets"}`` (``targets`` = the class). Training and test classes are
disjoint; every test set uses the ``retrieval`` protocol: without ``num_query`` each test image is a
query against all the others (CUB, Cars196, SOP), with it the first ``num_query`` items are queries
searched in the rest (In-Shop's query/gallery split).
"""
from __future__ import annotations

import os
from typing import Any, ClassVar, Sequence

import numpy as np

from omnireid.data.datasets import DATASET_REGISTRY, ImageSetDataset, TestSet
from omnireid.data.datasets.bases import DatasetLayoutError, Item
from omnireid.data.datasets.label_csv import read_label_csv

# Recall@K reported by default: the K of each benchmark's literature (TEST.RECALLS overrides).
SMALL_SET_RECALLS = (1, 2, 4, 8)
LARGE_SET_RECALLS = (1, 10, 20, 30)


def retrieval_item(img_path: str, label: int) -> Item:
    return {"img_path": img_path, "targets": int(label)}


class RetrievalDataset(ImageSetDataset):
    """Training items and one ``retrieval`` test set; ``class_names`` maps labels to readable names."""

    fields = ("targets",)
    test_protocol = "retrieval"
    recall_ks: ClassVar[tuple[int, ...]] = SMALL_SET_RECALLS

    def __init__(self, train: Sequence[Item], test: Sequence[Item], num_query: int | None = None,
                 class_names: dict[int, str] | None = None) -> None:
        super().__init__(train)
        self.test: list[Item] = list(test)
        self.num_query = num_query
        self.class_names = dict(class_names or {})

    def test_sets(self) -> list[TestSet]:
        if not self.test:
            return []
        meta: dict[str, Any] = {"recall_ks": list(self.recall_ks)}
        if self.num_query is not None:
            meta["num_query"] = self.num_query
        return [TestSet(self.name, self.test_protocol, self.test, meta)]

    def label_name(self, target: int) -> str:
        return self.class_names.get(int(target), str(target))

    def summary(self) -> str:
        def row(split: str, items: Sequence[Item]) -> str:
            return f"  {split:8s} | {len(items):7d} images | {len({i['targets'] for i in items}):6d} classes"

        rows = [row("train", self.train)]
        if self.num_query is None:
            rows.append(row("test", self.test))
        else:
            rows += [row("query", self.test[: self.num_query]), row("gallery", self.test[self.num_query :])]
        return f"=> {self.name} loaded\n" + "\n".join(rows)

    @classmethod
    def parse_int(cls, value: str, path: str, number: int, line: str, expected: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise cls.bad_line(path, number, line, expected) from None


@DATASET_REGISTRY.register()
class CUB(RetrievalDataset):
    """CUB-200-2011 (Wah et al. 2011): 11,788 bird images of 200 species; retrieval protocol of
    Song et al. 2016: classes 1-100 train (5,864 images), classes 101-200 test (5,924 images)."""

    dataset_dir = ("CUB_200_2011", "CUB")
    marker = "images.txt"
    layout = (
        "  <DATASETS.ROOT>/CUB_200_2011/\n"
        "    images.txt              '<image id> <path under images/>'\n"
        "    image_class_labels.txt  '<image id> <class id 1-200>'\n"
        "    classes.txt             '<class id> <class name>' (optional: readable class names)\n"
        "    images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg ..."
    )
    num_train_classes = 100

    def __init__(self, root: str = "datasets") -> None:
        folder = self.locate(root)
        labels_file = os.path.join(folder, "image_class_labels.txt")
        paths = self._id_table(os.path.join(folder, "images.txt"), "'<image id> <relative path>'")
        labels = self._id_table(labels_file, "'<image id> <class id>'", integer=True)
        names_file = os.path.join(folder, "classes.txt")
        names = self._id_table(names_file, "'<class id> <class name>'") if os.path.exists(names_file) else {}
        train, test = [], []
        for image_id, rel in paths.items():
            if image_id not in labels:
                raise DatasetLayoutError(f"CUB: image id {image_id} of images.txt has no line in {labels_file}")
            label = int(labels[image_id])
            item = retrieval_item(os.path.join(folder, "images", rel), label)
            (train if label <= self.num_train_classes else test).append(item)
        class_names = {int(k): v for k, v in names.items() if k.isdigit()}
        super().__init__(train, test, class_names=class_names)

    @classmethod
    def _id_table(cls, path: str, expected: str, integer: bool = False) -> dict[str, str]:
        """``first token -> rest of the line`` (the rest must be an integer when ``integer``)."""
        table = {}
        for number, line in cls.read_lines(path):
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or (integer and not parts[1].isdigit()):
                raise cls.bad_line(path, number, line, expected)
            table[parts[0]] = parts[1]
        return table


@DATASET_REGISTRY.register()
class Cars196(RetrievalDataset):
    """Stanford Cars (Krause et al. 2013): 16,185 images of 196 car models; retrieval protocol:
    classes 1-98 train (8,054 images), 99-196 test (8,131 images). Reads ``cars_annos.mat`` (scipy)."""

    dataset_dir = ("Cars196", "cars196", "CARS196", "Cars_196", "stanford_cars")
    marker = "cars_annos.mat"
    layout = (
        "  <DATASETS.ROOT>/Cars196/\n"
        "    cars_annos.mat          annotations (relative_im_path, class, ...) and class_names\n"
        "    car_ims/000001.jpg ..."
    )
    num_train_classes = 98

    def __init__(self, root: str = "datasets") -> None:
        folder = self.locate(root)
        mat_path = os.path.join(folder, self.marker)
        try:
            from scipy.io import loadmat  # noqa: PLC0415 - only this dataset needs scipy
            from scipy.io.matlab import MatReadError
        except ImportError as exc:
            raise ImportError("Cars196 reads cars_annos.mat with scipy: pip install scipy "
                              "(or pip install omnireid[retrieval])") from exc
        try:
            mat = loadmat(mat_path)
        except (MatReadError, ValueError, OSError, TypeError) as exc:
            raise DatasetLayoutError(f"Cars196: cannot read {mat_path}: {exc}") from exc
        if "annotations" not in mat:
            raise DatasetLayoutError(f"Cars196: {mat_path} has no 'annotations' variable. Official layout:\n"
                                     f"{self.layout}")
        annotations = np.asarray(mat["annotations"]).reshape(-1)
        fields = annotations.dtype.names or ()
        for required in ("relative_im_path", "class"):
            if required not in fields:
                raise DatasetLayoutError(f"Cars196: {mat_path}: annotations have no '{required}' field "
                                         f"(fields: {list(fields)})")
        class_names = {}
        if "class_names" in mat:
            class_names = {i + 1: str(_scalar(n)) for i, n in enumerate(np.asarray(mat["class_names"]).reshape(-1))}
        train, test = [], []
        for record in annotations:
            rel = str(_scalar(record["relative_im_path"]))
            label = int(_scalar(record["class"]))
            item = retrieval_item(os.path.join(folder, rel), label)
            (train if label <= self.num_train_classes else test).append(item)
        super().__init__(train, test, class_names=class_names)


def _scalar(value: Any) -> Any:
    """The single value inside a MATLAB cell / matrix as loadmat returns it (any nesting)."""
    flat = np.asarray(value).reshape(-1)
    if flat.size != 1:
        raise DatasetLayoutError(f"Cars196: expected a single value in cars_annos.mat, got {flat.size}")
    inner = flat[0]
    return _scalar(inner) if isinstance(inner, np.ndarray) else inner


@DATASET_REGISTRY.register()
class SOP(RetrievalDataset):
    """Stanford Online Products (Song et al. 2016): 120,053 images of 22,634 products; 11,318 train
    classes (59,551 images), 11,316 test classes (60,502 images)."""

    dataset_dir = ("Stanford_Online_Products", "SOP")
    marker = "Ebay_train.txt"
    layout = (
        "  <DATASETS.ROOT>/Stanford_Online_Products/\n"
        "    Ebay_train.txt, Ebay_test.txt   header 'image_id class_id super_class_id path', then\n"
        "                                    '1 1 1 bicycle_final/111085122871_0.JPG' ...\n"
        "    bicycle_final/111085122871_0.JPG ..."
    )
    recall_ks = LARGE_SET_RECALLS

    def __init__(self, root: str = "datasets") -> None:
        folder = self.locate(root)
        super().__init__(self._read(folder, "Ebay_train.txt"), self._read(folder, "Ebay_test.txt"))

    @classmethod
    def _read(cls, folder: str, name: str) -> list[Item]:
        path = os.path.join(folder, name)
        expected = "'<image_id> <class_id> <super_class_id> <path>'"
        items = []
        for number, line in cls.read_lines(path):
            parts = line.split()
            if parts[:4] == ["image_id", "class_id", "super_class_id", "path"]:
                continue
            if len(parts) != 4:
                raise cls.bad_line(path, number, line, expected)
            label = cls.parse_int(parts[1], path, number, line, expected)
            items.append(retrieval_item(os.path.join(folder, parts[3]), label))
        return items


@DATASET_REGISTRY.register()
class InShop(RetrievalDataset):
    """DeepFashion In-shop Clothes Retrieval (Liu et al. 2016): 3,997 training items (25,882 images);
    test: 14,218 query images searched in 12,612 gallery images (3,985 items)."""

    dataset_dir = ("InShop", "In-shop Clothes Retrieval Benchmark", "Inshop_Clothes", "inshop")
    marker = "list_eval_partition.txt"
    layout = (
        "  <DATASETS.ROOT>/InShop/\n"
        "    list_eval_partition.txt (or Eval/list_eval_partition.txt): the image count, the header\n"
        "        'image_name item_id evaluation_status', then 'img/WOMEN/Dresses/id_00000002/02_1_front.jpg "
        "id_00000002 train|query|gallery'\n"
        "    img/WOMEN/Dresses/id_00000002/02_1_front.jpg ... (or Img/img/...)"
    )
    recall_ks = LARGE_SET_RECALLS

    @classmethod
    def locate(cls, root: str) -> str:
        names = cls.dataset_dir if isinstance(cls.dataset_dir, tuple) else (cls.dataset_dir,)
        for candidate in [os.path.join(root, name) for name in names] + [root]:
            if os.path.exists(os.path.join(candidate, cls.marker)) or \
                    os.path.exists(os.path.join(candidate, "Eval", cls.marker)):
                return candidate
        return super().locate(root)  # raises, quoting the layout

    def __init__(self, root: str = "datasets") -> None:
        folder = self.locate(root)
        list_file = os.path.join(folder, self.marker)
        if not os.path.exists(list_file):
            list_file = os.path.join(folder, "Eval", self.marker)
        image_root = os.path.join(folder, "Img") if os.path.isdir(os.path.join(folder, "Img", "img")) else folder
        splits: dict[str, list[Item]] = {"train": [], "query": [], "gallery": []}
        expected = "'<image_name> <item_id> <train|query|gallery>'"
        for number, line in self.read_lines(list_file):
            parts = line.split()
            if number == 1 and len(parts) == 1 and parts[0].isdigit():
                continue  # the image count
            if parts == ["image_name", "item_id", "evaluation_status"]:
                continue
            if len(parts) != 3 or parts[2] not in splits or not parts[1].startswith("id_"):
                raise self.bad_line(list_file, number, line, expected)
            label = self.parse_int(parts[1][3:], list_file, number, line, expected)
            splits[parts[2]].append(retrieval_item(os.path.join(image_root, parts[0]), label))
        test = splits["query"] + splits["gallery"]
        super().__init__(splits["train"], test, num_query=len(splits["query"]) if test else None)

    def label_name(self, target: int) -> str:
        return f"id_{int(target):08d}"


@DATASET_REGISTRY.register()
class RetrievalCSV(RetrievalDataset):
    """Your own retrieval data as CSV lists of ``path,label`` rows (``RETRIEVAL.CSV.*``).

    ``TRAIN``: training images; ``TEST``: a test set where each image is a query against all others;
    or ``QUERY`` + ``GALLERY``: queries searched in a separate gallery. Labels are class names or
    integers; two images match when their labels are equal. Relative image paths are resolved
    against the CSV file's folder. Example::

        # /data/shop/train.csv            # config.yaml
        path,label                         DATASETS: {NAMES: ["RetrievalCSV"], TESTS: ["RetrievalCSV"]}
        images/lamp_01_a.jpg,lamp_01       RETRIEVAL:
        images/lamp_01_b.jpg,lamp_01         CSV: {TRAIN: /data/shop/train.csv, TEST: /data/shop/test.csv}
    """

    layout = ("  CSV files with rows 'path,label' (RETRIEVAL.CSV.TRAIN, and RETRIEVAL.CSV.TEST or "
              "RETRIEVAL.CSV.QUERY + RETRIEVAL.CSV.GALLERY)")

    def __init__(self, train_csv: str = "", test_csv: str = "", query_csv: str = "", gallery_csv: str = "") -> None:
        if bool(query_csv) != bool(gallery_csv):
            raise DatasetLayoutError("RetrievalCSV: RETRIEVAL.CSV.QUERY and RETRIEVAL.CSV.GALLERY must be set "
                                     f"together (got QUERY={query_csv!r}, GALLERY={gallery_csv!r})")
        if test_csv and query_csv:
            raise DatasetLayoutError("RetrievalCSV: set RETRIEVAL.CSV.TEST (every image a query) or "
                                     "RETRIEVAL.CSV.QUERY + GALLERY, not both")
        if not (train_csv or test_csv or query_csv):
            raise DatasetLayoutError("RetrievalCSV: set RETRIEVAL.CSV.TRAIN and/or RETRIEVAL.CSV.TEST (or QUERY + "
                                     "GALLERY) to CSV files of 'path,label' rows")
        train_rows = read_label_csv(train_csv, "RetrievalCSV") if train_csv else []
        test_files = [test_csv] if test_csv else [query_csv, gallery_csv] if query_csv else []
        test_rows = [read_label_csv(f, "RetrievalCSV") for f in test_files]
        names = sorted({label for _, label in train_rows} | {label for rows in test_rows for _, label in rows})
        index = {name: i for i, name in enumerate(names)}
        train = [retrieval_item(p, index[label]) for p, label in train_rows]
        test = [retrieval_item(p, index[label]) for rows in test_rows for p, label in rows]
        num_query = len(test_rows[0]) if query_csv else None
        super().__init__(train, test, num_query=num_query, class_names=dict(enumerate(names)))

    @classmethod
    def from_config(cls, cfg) -> "RetrievalCSV":
        files = cfg.RETRIEVAL.CSV
        return cls(train_csv=files.TRAIN, test_csv=files.TEST, query_csv=files.QUERY, gallery_csv=files.GALLERY)


__all__ = ["CUB", "Cars196", "InShop", "RetrievalCSV", "RetrievalDataset", "SOP"]
