"""Image classification data: an image-folder tree and CSV lists; class names kept in order.

Items are ``{"img_path", "targets"}`` with ``targets`` the class index ``0..C-1`` into the class
names; the test set uses the ``classification`` protocol with ``meta["class_names"]``. Every class
must have training images: the trainer's labels are then exactly these indices, so the names saved
beside checkpoints (``metadata.json``) and the test labels line up.
"""
from __future__ import annotations

import os
from typing import Sequence

from omnireid.data.datasets import DATASET_REGISTRY, ImageSetDataset, TestSet, datasets_root
from omnireid.data.datasets.bases import DatasetLayoutError, Item
from omnireid.data.datasets.label_csv import read_label_csv

# torchvision's ImageFolder extensions
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ClassificationDataset(ImageSetDataset):
    """Training items and one ``classification`` test set over the same ordered class names."""

    fields = ("targets",)
    test_protocol = "classification"

    def __init__(self, train: Sequence[Item], test: Sequence[Item], class_names: Sequence[str]) -> None:
        super().__init__(train)
        self.test: list[Item] = list(test)
        self.class_names = list(class_names)
        if train:
            present = {item["targets"] for item in train}
            missing = [name for i, name in enumerate(self.class_names) if i not in present]
            if missing:
                raise DatasetLayoutError(f"{self.name}: classes without training images: {missing[:10]}"
                                         f"{' ...' if len(missing) > 10 else ''}; every class needs at least one")

    def test_sets(self) -> list[TestSet]:
        if not self.test:
            return []
        return [TestSet(self.name, self.test_protocol, self.test, {"class_names": list(self.class_names)})]

    def metadata(self) -> dict:
        return {"class_names": list(self.class_names)}

    def label_name(self, target: int) -> str:
        return self.class_names[int(target)]

    def summary(self) -> str:
        rows = [f"  {split:8s} | {len(items):7d} images | {len({i['targets'] for i in items}):6d} classes"
                for split, items in (("train", self.train), ("test", self.test))]
        return f"=> {self.name} loaded ({len(self.class_names)} classes)\n" + "\n".join(rows)


def _class_folders(split_dir: str) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def _images_under(folder: str) -> list[str]:
    """Image files under ``folder`` (recursively, sorted, hidden entries skipped)."""
    found = []
    for current, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(current, f) for f in sorted(files)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


@DATASET_REGISTRY.register()
class ImageFolder(ClassificationDataset):
    """A tree ``<root>/<train>/<class>/*.jpg`` and ``<root>/<test>/<class>/*.jpg`` (torchvision's
    ImageFolder convention): class names are the training sub-folders, sorted; the test split's
    class folders must be among them. ``CLASSIFICATION.FOLDER.ROOT`` (absolute, or relative to
    ``DATASETS.ROOT`` like every dataset folder; ``""``: ``DATASETS.ROOT`` itself), ``.TRAIN`` (default
    ``train``) and ``.TEST`` (default ``val``; ``""`` for no test set)."""

    layout = ("  <CLASSIFICATION.FOLDER.ROOT>/\n"
              "    train/<class name>/*.jpg|png|...\n"
              "    val/<class name>/*.jpg|png|...")

    def __init__(self, root: str, train_split: str = "train", test_split: str = "val") -> None:
        train_dir = os.path.join(root, train_split)
        if not os.path.isdir(train_dir):
            raise DatasetLayoutError(f"ImageFolder: training folder not found: {train_dir}. Layout:\n{self.layout}")
        class_names = _class_folders(train_dir)
        if not class_names:
            raise DatasetLayoutError(f"ImageFolder: {train_dir} has no class sub-folder. Layout:\n{self.layout}")
        index = {name: i for i, name in enumerate(class_names)}
        train = [{"img_path": p, "targets": index[c]} for c in class_names for p in _images_under(os.path.join(train_dir, c))]
        test: list[Item] = []
        if test_split:
            test_dir = os.path.join(root, test_split)
            if not os.path.isdir(test_dir):
                raise DatasetLayoutError(f"ImageFolder: test folder not found: {test_dir} (set "
                                         "CLASSIFICATION.FOLDER.TEST, or '' for none). Layout:\n" + self.layout)
            unknown = [c for c in _class_folders(test_dir) if c not in index]
            if unknown:
                raise DatasetLayoutError(f"ImageFolder: {test_dir} has classes that {train_dir} lacks: {unknown[:10]}")
            test = [{"img_path": p, "targets": index[c]} for c in _class_folders(test_dir)
                    for p in _images_under(os.path.join(test_dir, c))]
        super().__init__(train, test, class_names)

    @classmethod
    def from_config(cls, cfg) -> "ImageFolder":
        folder = cfg.CLASSIFICATION.FOLDER
        return cls(os.path.join(datasets_root(cfg), os.path.expanduser(folder.ROOT)), folder.TRAIN, folder.TEST)


@DATASET_REGISTRY.register()
class ClassificationCSV(ClassificationDataset):
    """Your own classification data as CSV lists of ``path,label`` (``CLASSIFICATION.CSV.TRAIN/TEST``).

    Class order: ``CLASSIFICATION.CSV.CLASSES``, a text file with one class name per line, when
    given (labels are then names from it, or 0-based indices into it); otherwise, when every label
    is an integer, classes ``0..max`` named by their number; otherwise the order in which names first
    appear in the training list. Relative image paths are resolved against the CSV file's folder.
    """

    layout = "  CSV files with rows 'path,label' (CLASSIFICATION.CSV.TRAIN / TEST; optional CLASSES file)"

    def __init__(self, train_csv: str = "", test_csv: str = "", classes_file: str = "") -> None:
        if not (train_csv or test_csv):
            raise DatasetLayoutError("ClassificationCSV: set CLASSIFICATION.CSV.TRAIN and/or CLASSIFICATION.CSV.TEST "
                                     "to CSV files of 'path,label' rows")
        train_rows = read_label_csv(train_csv, "ClassificationCSV") if train_csv else []
        test_rows = read_label_csv(test_csv, "ClassificationCSV") if test_csv else []
        class_names = self._class_names(classes_file, train_rows + test_rows, train_rows)
        index = {name: i for i, name in enumerate(class_names)}
        by_number = classes_file != "" or all(label.isdigit() for _, label in train_rows + test_rows)

        def target(label: str, csv_file: str) -> int:
            if label in index:
                return index[label]
            if by_number and label.isdigit() and int(label) < len(class_names):
                return int(label)
            raise DatasetLayoutError(f"ClassificationCSV: {csv_file}: label {label!r} is not one of the "
                                     f"{len(class_names)} classes" + (f" of {classes_file}" if classes_file else
                                                                     " of the training list"))

        train = [{"img_path": p, "targets": target(label, train_csv)} for p, label in train_rows]
        test = [{"img_path": p, "targets": target(label, test_csv)} for p, label in test_rows]
        super().__init__(train, test, class_names)

    @staticmethod
    def _class_names(classes_file: str, all_rows: list[tuple[str, str]], train_rows: list[tuple[str, str]]) -> list[str]:
        if classes_file:
            if not os.path.isfile(classes_file):
                raise DatasetLayoutError(f"ClassificationCSV: class list not found: {classes_file}")
            with open(classes_file, encoding="utf-8-sig") as f:
                names = [line.strip() for line in f if line.strip()]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise DatasetLayoutError(f"ClassificationCSV: {classes_file} lists {duplicates[:5]} more than once")
            return names
        if all(label.isdigit() for _, label in all_rows):
            return [str(i) for i in range(max(int(label) for _, label in all_rows) + 1)]
        return list(dict.fromkeys(label for _, label in train_rows or all_rows))

    @classmethod
    def from_config(cls, cfg) -> "ClassificationCSV":
        files = cfg.CLASSIFICATION.CSV
        return cls(train_csv=files.TRAIN, test_csv=files.TEST, classes_file=files.CLASSES)
