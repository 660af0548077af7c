"""Registered attribute datasets: PA-100K, Market-1501-attribute, DukeMTMC-attribute, the synthetic
data's attributes and a CSV format.

Items carry ``attributes`` (A,) 0/1 floats, ``attribute_mask`` (A,) 1 = annotated, and
``attribute_groups`` (G,) class indices (-1 unknown); identity datasets add ``targets``/``camids``,
so one model can learn identities and attributes together. Test sets have protocol
``attributes`` and the schema as metadata; ``ATTRIBUTES.TEST_SPLITS`` picks ``val`` and/or ``test``.

Validation (``<name>-val``): PA-100K's official val split; for the identity datasets, a seeded
``ATTRIBUTES.VAL_FRACTION`` of the *training identities* (never the test set, unlike FastAttr, which
validated on Market/Duke's test set). ``ATTRIBUTES.REID_TEST`` adds the usual query/gallery test set
(``<name>-reid``, protocol ``reid``) to evaluate a joint reID + attribute model on both.
"""
from __future__ import annotations

import abc
import os
from typing import Any, Sequence

from omnireid.data.datasets import DATASET_REGISTRY, DatasetLayoutError, ImageSetDataset, TestSet, datasets_root
from omnireid.data.datasets.market1501 import DukeMTMC, Market1501

from .readers import (MARKET_AGE, read_attribute_csv, read_identity_attributes, read_pa100k,
                      read_synthetic_attributes, split_identities)
from .schema import DEFAULT_THRESHOLD, THRESHOLD_KEY, AttributeSchema, EncodedLabels, check_threshold

ATTRIBUTE_FIELDS = ("attributes", "attribute_mask", "attribute_groups")
ATTRIBUTES_PROTOCOL = "attributes"
SPLITS = ("val", "test")


def attribute_item(img_path: str, labels: EncodedLabels, **fields: Any) -> dict:
    """An item with the attribute fields (and any others, e.g. ``targets``/``camids``)."""
    return {"img_path": img_path, **fields, **labels.as_fields()}


def _check_splits(splits: Sequence[str]) -> tuple[str, ...]:
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"ATTRIBUTES.TEST_SPLITS must list some of {list(SPLITS)}, got {list(splits)}")
    return tuple(splits)


class AttributeDataset(ImageSetDataset):
    """Training items with attribute fields, and ``val`` / ``test`` test sets of protocol ``attributes``.

    ``threshold`` (``TEST.THRES``) is the decision threshold of the binary attributes; it joins the
    training metadata (``attribute_threshold`` in ``metadata.json`` and checkpoints) so ``omnireid
    predict`` decides as the run's evaluation did.
    """

    fields = ATTRIBUTE_FIELDS
    test_protocol = ATTRIBUTES_PROTOCOL

    def __init__(self, schema: AttributeSchema, train: Sequence[dict], tests: dict[str, Sequence[dict]],
                 extra_tests: Sequence[TestSet] = (), threshold: float = DEFAULT_THRESHOLD) -> None:
        super().__init__(train)
        self.schema = schema
        self.threshold = check_threshold(threshold)
        self._tests = {split: list(items) for split, items in tests.items()}
        self._extra_tests = list(extra_tests)

    def metadata(self) -> dict[str, Any]:
        return {**self.schema.to_metadata(), THRESHOLD_KEY: self.threshold}

    def test_sets(self) -> list[TestSet]:
        out = [TestSet(self.name if split == "test" else f"{self.name}-{split}", self.test_protocol, items,
                       self.metadata())
               for split, items in self._tests.items() if items]
        return out + self._extra_tests


# ----------------------------------------------------------------------------------------------
@DATASET_REGISTRY.register()
class PA100K(AttributeDataset):
    """PA-100K (Liu et al., ICCV 2017): 26 binary attributes, 80k/10k/10k train/val/test images.

    ``ATTRIBUTES.TRAINVAL`` trains on train + val (Rethinking_of_PAR's setting); the val test set
    is then not available.
    """

    dataset_dir = ("PA-100K", "pa100k")
    marker = "data"
    layout = ("  <DATASETS.ROOT>/PA-100K/\n"
              "    annotation.mat        (or annotation/annotation.mat)\n"
              "    data/000001.jpg ...   (or data/release_data/release_data/000001.jpg ...)")

    def __init__(self, root: str = "datasets", test_splits: Sequence[str] = SPLITS, trainval: bool = False,
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        test_splits = _check_splits(test_splits)
        if trainval and "val" in test_splits:
            raise ValueError("PA100K: ATTRIBUTES.TRAINVAL trains on the val split; remove 'val' from "
                             "ATTRIBUTES.TEST_SPLITS")
        folder = self.locate(root)
        annotation = next((p for p in (os.path.join(folder, "annotation.mat"),
                                       os.path.join(folder, "annotation", "annotation.mat")) if os.path.isfile(p)),
                          None)
        if annotation is None:
            raise DatasetLayoutError(f"PA100K: no annotation.mat in {folder}. Official layout:\n{self.layout}")
        schema, splits = read_pa100k(annotation)
        images = self._image_folder(folder, splits["train"][0][0] if splits["train"] else "")
        items = {split: [attribute_item(os.path.join(images, name), labels) for name, labels in entries]
                 for split, entries in splits.items()}
        train = items["train"] + (items["val"] if trainval else [])
        super().__init__(schema, train, {split: items[split] for split in test_splits}, threshold=threshold)

    @classmethod
    def _image_folder(cls, folder: str, first: str) -> str:
        candidates = [os.path.join(folder, "data"), os.path.join(folder, "data", "release_data", "release_data")]
        for candidate in candidates:
            if os.path.isfile(os.path.join(candidate, first)):
                return candidate
        raise DatasetLayoutError(f"PA100K: image {first} not found in {' or '.join(candidates)}. "
                                 f"Official layout:\n{cls.layout}")

    @classmethod
    def from_config(cls, cfg) -> "PA100K":
        return cls(datasets_root(cfg), cfg.ATTRIBUTES.TEST_SPLITS, cfg.ATTRIBUTES.TRAINVAL, float(cfg.TEST.THRES))


# ----------------------------------------------------------------------------------------------
class IdentityAttributeDataset(AttributeDataset, abc.ABC):
    """A Market-1501-layout reID dataset whose identities are labelled with attributes.

    Training items are the training images of identities not held out for validation (with
    ``targets``/``camids``); the attribute test set is ``bounding_box_test`` of the annotated test
    identities (the attribute benchmarks' protocol; distractors and junk have no labels).
    Subclasses say which reID dataset gives the images and how to read the labels.
    """

    reid_dataset: type = Market1501

    def __init__(self, root: str = "datasets", val_fraction: float = 0.1, val_seed: int = 0,
                 test_splits: Sequence[str] = SPLITS, reid_test: bool = False,
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        test_splits = _check_splits(test_splits)
        folder = self.locate(root)
        schema, labels = self.read_labels(folder)
        reid = self.reid_dataset(root=folder)
        train = self._labelled(reid.train, labels["train"], "bounding_box_train", skip=())
        train_ids, val_ids = split_identities([item["targets"] for item in train], val_fraction, val_seed)
        if "val" in test_splits and not val_ids:
            raise ValueError(f"{self.name}: ATTRIBUTES.TEST_SPLITS lists 'val' but ATTRIBUTES.VAL_FRACTION is "
                             f"{val_fraction}: no training identity is held out")
        tests = {"val": [i for i in train if i["targets"] in val_ids],
                 "test": self._labelled(reid.gallery, labels["test"], "bounding_box_test", skip=(0,))}
        extra = []
        if reid_test:
            extra = [TestSet(f"{self.name}-reid", t.protocol, t.items, t.meta) for t in reid.test_sets()]
        super().__init__(schema, [i for i in train if i["targets"] in train_ids],
                         {split: tests[split] for split in test_splits}, extra, threshold)

    @abc.abstractmethod
    def read_labels(self, folder: str) -> tuple[AttributeSchema, dict[str, dict[int, EncodedLabels]]]:
        """``(schema, {"train": {pid: labels}, "test": {pid: labels}})`` from the dataset folder."""

    def _labelled(self, items: list[dict], labels: dict[int, EncodedLabels], split: str,
                  skip: Sequence[int]) -> list[dict]:
        out = []
        for item in items:
            pid = item["targets"]
            if pid in labels:
                out.append(attribute_item(item["img_path"], labels[pid], targets=pid, camids=item["camids"]))
            elif pid not in skip:
                raise DatasetLayoutError(f"{self.name}: identity {pid} of {item['img_path']} has no attribute "
                                         f"labels in the {split.split('_')[-1]} annotations")
        return out

    @classmethod
    def from_config(cls, cfg) -> "IdentityAttributeDataset":
        a = cfg.ATTRIBUTES
        return cls(datasets_root(cfg), float(a.VAL_FRACTION), int(a.VAL_SEED), a.TEST_SPLITS, bool(a.REID_TEST),
                   float(cfg.TEST.THRES))


@DATASET_REGISTRY.register()
class Market1501Attr(IdentityAttributeDataset):
    """Market-1501-attribute (Lin et al. 2019): 26 attributes per identity; ``age`` (4 classes) is a group."""

    dataset_dir = Market1501.dataset_dir
    marker = "market_attribute.mat"
    layout = Market1501.layout + "\n    market_attribute.mat"

    def read_labels(self, folder: str):
        return read_identity_attributes(os.path.join(folder, self.marker), "market_attribute", {"age": MARKET_AGE})


@DATASET_REGISTRY.register()
class DukeMTMCAttr(IdentityAttributeDataset):
    """DukeMTMC-attribute (Lin et al. 2019): 23 binary attributes per identity."""

    reid_dataset = DukeMTMC
    dataset_dir = DukeMTMC.dataset_dir
    marker = "duke_attribute.mat"
    layout = DukeMTMC.layout + "\n    duke_attribute.mat"

    def read_labels(self, folder: str):
        return read_identity_attributes(os.path.join(folder, self.marker), "duke_attribute")


@DATASET_REGISTRY.register()
class SyntheticAttributes(IdentityAttributeDataset):
    """The built-in synthetic data (``omnireid data synth``) with its ``attributes.csv``: 6 binary
    attributes (short sleeves, long hair, broad body, hat, bag, backpack) and 6 groups (upper/lower
    colour, pattern, pattern colour, lower style, hair colour)."""

    dataset_dir = Market1501.dataset_dir
    marker = "attributes.csv"
    layout = Market1501.layout + "\n    attributes.csv   (written by 'omnireid data synth')"

    def read_labels(self, folder: str):
        schema, labels = read_synthetic_attributes(os.path.join(folder, self.marker))
        return schema, {"train": labels, "test": labels}


@DATASET_REGISTRY.register()
class SyntheticAttributePeople(SyntheticAttributes):
    """The attribute demo's synthetic people (many identities, one image per camera; see
    :mod:`.demo`), in their own folder ``<DATASETS.ROOT>/synthetic_attributes`` so they live beside
    the reID demo's ``Market-1501-v15.09.15``."""

    dataset_dir = "synthetic_attributes"
    layout = "  <DATASETS.ROOT>/synthetic_attributes/   (Market-1501 layout + attributes.csv, written by " \
             "'omnireid demo --task attributes')"


# ----------------------------------------------------------------------------------------------
@DATASET_REGISTRY.register()
class AttributeCSV(AttributeDataset):
    """Your own attribute data as CSV files ``ATTRIBUTES.CSV.TRAIN`` / ``VAL`` / ``TEST``.

    Header ``path,attr1,attr2,...``; binary cells 0/1; a categorical column is declared as
    ``name:class1|class2|...`` and holds class names; an empty cell is an unknown label (ignored by
    the loss and the metrics). Relative image paths are resolved against the CSV file's folder. All
    files must have the same header. Example::

        path,hat,backpack,age:child|adult|senior
        images/0001.jpg,1,0,adult
        images/0002.jpg,0,,senior
    """

    layout = "  CSV files 'path,attr1,attr2,...' (ATTRIBUTES.CSV.TRAIN / VAL / TEST)"

    def __init__(self, train_csv: str = "", val_csv: str = "", test_csv: str = "",
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        files = {"train": train_csv, "val": val_csv, "test": test_csv}
        if not any(files.values()):
            raise DatasetLayoutError("AttributeCSV: set ATTRIBUTES.CSV.TRAIN and/or ATTRIBUTES.CSV.TEST (and optionally "
                                     "VAL) to CSV files 'path,attr1,attr2,...'")
        schema: AttributeSchema | None = None
        items: dict[str, list[dict]] = {}
        for split, path in files.items():
            if not path:
                items[split] = []
                continue
            file_schema, rows = read_attribute_csv(path)
            if schema is not None and file_schema != schema:
                raise DatasetLayoutError(f"AttributeCSV: {path} has other attribute columns than the previous CSV "
                                         f"files ({file_schema.output_names()} vs {schema.output_names()})")
            schema = file_schema
            items[split] = [attribute_item(p, labels) for p, labels in rows]
        assert schema is not None
        super().__init__(schema, items["train"], {"val": items["val"], "test": items["test"]}, threshold=threshold)

    @classmethod
    def from_config(cls, cfg) -> "AttributeCSV":
        files = cfg.ATTRIBUTES.CSV
        return cls(files.TRAIN, files.VAL, files.TEST, float(cfg.TEST.THRES))
