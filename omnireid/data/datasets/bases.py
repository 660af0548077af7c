"""What every dataset is: training items (dicts with named fields) and one or more test sets.

An item is ``{"img_path": str, <field>: value, ...}``. reID items carry ``targets`` (the identity)
and ``camids`` (the camera); other tasks declare their own fields (``attributes``, ...). A test set
is a :class:`TestSet`: its items plus the *protocol* that evaluates it (``reid``, ``retrieval``,
``verification``, ``classification``, ``attributes``, or any protocol an evaluator registers for)
and the protocol's metadata (``num_query`` for reid, pairs for verification, ...).

A dataset class reads one official on-disk layout and nothing else; relabelling, namespacing and
combining several sets are the loader's job (``omnireid.data.build``).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from omnireid.utils.errors import DatasetError

logger = logging.getLogger(__name__)

Item = dict  # {"img_path": str, **fields}

DATASETS_ENV = "OMNIREID_DATASETS"


class DatasetLayoutError(DatasetError, FileNotFoundError):
    """A dataset folder or list file is missing or malformed; the message names the path and layout."""


_INTEGER = re.compile(r"-?[0-9]+")


def parse_int(text: str, negative: bool = True) -> int | None:
    """``text`` as a decimal integer (ASCII digits, optional ``-``), or None.

    ``str.isdigit`` accepts characters ``int()`` refuses (superscripts) and other scripts' digits; a
    list file with those is malformed, reported as such by the caller.
    """
    text = text.strip()
    if _INTEGER.fullmatch(text) is None or (not negative and text.startswith("-")):
        return None
    return int(text)


def datasets_root(cfg) -> str:
    """``DATASETS.ROOT``, else ``$OMNIREID_DATASETS``, else ``"datasets"``."""
    root = cfg.DATASETS.ROOT or os.environ.get(DATASETS_ENV, "") or "datasets"
    return os.path.expanduser(root)


def reid_item(img_path: str, pid: int, camid: int) -> Item:
    """A reID item: the identity is ``targets``, the camera ``camids``."""
    return {"img_path": img_path, "targets": int(pid), "camids": int(camid)}


@dataclass
class TestSet:
    """A test split and how it is evaluated.

    ``protocol`` picks the default evaluator (``omnireid.evaluation.PROTOCOL_EVALUATORS``); ``meta``
    holds what that protocol needs beyond the items: reid ``num_query`` (the first ``num_query``
    items are queries, the rest the gallery); verification ``pairs`` ((M, 2) item indices) and
    ``issame`` ((M,) bool); classification ``class_names``; attributes ``attribute_names``...
    """

    __test__ = False  # not a pytest test class, whatever its name

    name: str
    protocol: str
    items: list[Item]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, keep: Sequence[bool]) -> "TestSet":
        """The test set without the items where ``keep`` is False, with index-bearing metadata fixed.

        ``num_query`` counts the kept queries; ``pairs`` (with ``issame``) keeps only pairs whose two
        items are kept, renumbered. Other metadata is copied unchanged.
        """
        keep = np.asarray(keep, dtype=bool)
        if len(keep) != len(self.items):
            raise ValueError(f"subset of {self.name}: {len(keep)} flags for {len(self.items)} items")
        meta = dict(self.meta)
        if "num_query" in meta:
            meta["num_query"] = int(keep[: int(meta["num_query"])].sum())
        if "pairs" in meta:
            pairs = np.asarray(meta["pairs"], dtype=np.int64).reshape(-1, 2)
            new_index = np.cumsum(keep) - 1
            kept_pairs = keep[pairs].all(axis=1)
            meta["pairs"] = new_index[pairs[kept_pairs]]
            if "issame" in meta:
                meta["issame"] = np.asarray(meta["issame"], dtype=bool)[kept_pairs]
        return TestSet(self.name, self.protocol, [item for item, k in zip(self.items, keep) if k], meta)


def distinct(items: Sequence[Item], key: str) -> int:
    """How many distinct values of field ``key`` the items have (0 when they lack it)."""
    return len({item[key] for item in items if key in item})


class ImageSetDataset:
    """Base of every registered dataset: training items, test sets and metadata.

    Subclasses set ``fields`` (the label fields their training items carry, e.g. ``("targets",
    "camids")``), ``test_protocol`` (how their test split is evaluated) and build their lists in
    ``__init__``; they override :meth:`test_sets` when they have several test sets or protocol
    metadata, and :meth:`metadata` to describe the labels (``class_names``, ``attribute_names``, ...).
    ``dataset_dir`` / ``marker`` / ``layout`` describe the official on-disk layout (quoted in errors).
    """

    fields: ClassVar[tuple[str, ...]] = ("targets",)
    test_protocol: ClassVar[str] = ""
    dataset_dir: ClassVar[str | tuple[str, ...]] = ""  # folder name(s) under the root, first match wins
    marker: ClassVar[str] = ""
    layout: ClassVar[str] = ""

    def __init__(self, train: Sequence[Item]) -> None:
        self.train: list[Item] = list(train)

    @classmethod
    def from_config(cls, cfg) -> "ImageSetDataset":
        """Build from a config; datasets with extra options (test size, CSV files) override this."""
        return cls(root=datasets_root(cfg))  # type: ignore[call-arg]

    @property
    def name(self) -> str:
        return type(self).__name__

    def test_sets(self) -> list[TestSet]:
        """The test sets this dataset defines (empty when it has none)."""
        return []

    def metadata(self) -> dict[str, Any]:
        """What describes the labels of the training items (``class_names``, ``attribute_names``...)."""
        return {}

    def label_name(self, target: int) -> str:
        """The readable name of training label ``target`` (its number, unless the dataset names them)."""
        return str(target)

    def combined_train(self) -> list[tuple[Item, str]]:
        """Training items of ``DATASETS.COMBINEALL`` with the split each came from (``"train"`` /
        ``"test"``); datasets whose test images may train override this. By default: train only."""
        return [(item, "train") for item in self.train]

    def summary(self) -> str:
        rows = [self._summary_row("train", self.train)]
        rows += [self._summary_row(test.name if test.name != self.name else "test", test.items)
                 for test in self.test_sets()]
        return f"=> {self.name} loaded\n" + "\n".join(rows)

    def _summary_row(self, split: str, items: Sequence[Item]) -> str:
        row = f"  {split:8s} | {len(items):7d} images"
        for key, label in (("targets", "labels"), ("camids", "cameras")):
            if key in self.fields:
                row += f" | {distinct(items, key):6d} {label}"
        return row

    # layout helpers ------------------------------------------------------------------------
    @classmethod
    def locate(cls, root: str) -> str:
        """The dataset folder: ``<root>/<dataset_dir>``, or ``root`` itself when it holds the marker.

        Both ``DATASETS.ROOT=/data`` (holding ``/data/Market-1501-v15.09.15``) and
        ``DATASETS.ROOT=/data/Market-1501-v15.09.15`` work.
        """
        names = (cls.dataset_dir,) if isinstance(cls.dataset_dir, str) else cls.dataset_dir
        for candidate in [os.path.join(root, name) for name in names] + [root]:
            if os.path.exists(os.path.join(candidate, cls.marker)):
                return candidate
        expected = " or ".join(os.path.join(root, name, cls.marker) for name in names)
        raise DatasetLayoutError(
            f"{cls.__name__}: dataset not found: expected {expected} (or {os.path.join(root, cls.marker)} "
            f"when DATASETS.ROOT is the dataset folder itself). Set DATASETS.ROOT or ${DATASETS_ENV}. "
            f"Official layout:\n{cls.layout}"
        )

    @classmethod
    def require(cls, path: str) -> str:
        """``path`` if it exists, else an error quoting the official layout."""
        if not os.path.exists(path):
            raise DatasetLayoutError(f"{cls.__name__}: missing {path}. Official layout:\n{cls.layout}")
        return path

    @classmethod
    def read_lines(cls, path: str) -> list[tuple[int, str]]:
        """Non-empty stripped lines of a list file with their 1-based line numbers."""
        cls.require(path)
        try:
            with open(path, encoding="utf-8") as f:
                return [(number, line.strip()) for number, line in enumerate(f, 1) if line.strip()]
        except UnicodeDecodeError as exc:
            raise DatasetLayoutError(f"{cls.__name__}: {path} is not a UTF-8 text list ({exc.reason} at byte "
                                     f"{exc.start}). Official layout:\n{cls.layout}") from exc

    @classmethod
    def bad_line(cls, path: str, number: int, line: str, expected: str) -> DatasetLayoutError:
        return DatasetLayoutError(f"{cls.__name__}: {path}, line {number}: expected {expected}, got {line!r}")


class ReidDataset(ImageSetDataset):
    """A reID benchmark: training items and a query/gallery test set (protocol ``reid``).

    Items are :func:`reid_item` dicts. ``junk_pids`` are identities that never train (e.g. Market's
    distractors 0 and junk -1 when ``DATASETS.COMBINEALL`` adds the test images to training).
    """

    fields = ("targets", "camids")
    test_protocol = "reid"
    junk_pids: ClassVar[frozenset[int]] = frozenset()

    def __init__(self, train: Sequence[Item], query: Sequence[Item], gallery: Sequence[Item]) -> None:
        super().__init__(train)
        self.query: list[Item] = list(query)
        self.gallery: list[Item] = list(gallery)

    def test_sets(self) -> list[TestSet]:
        """One ``reid`` test set named like the dataset: queries first, then the gallery."""
        if not self.query and not self.gallery:
            return []
        return [TestSet(self.name, self.test_protocol, self.query + self.gallery, {"num_query": len(self.query)})]

    @property
    def num_train_pids(self) -> int:
        return distinct(self.train, "targets")

    @property
    def num_train_cams(self) -> int:
        return distinct(self.train, "camids")

    def combined_train(self) -> list[tuple[Item, str]]:
        """Train + query + gallery, junk identities removed; test identities are different people
        from training identities with possibly equal numbers, so the loader namespaces them apart."""
        out = super().combined_train()
        out += [(item, "test") for item in self.query + self.gallery if item["targets"] not in self.junk_pids]
        return out

    def summary(self) -> str:
        rows = [self._summary_row(split, items)
                for split, items in (("train", self.train), ("query", self.query), ("gallery", self.gallery))]
        return f"=> {self.name} loaded\n" + "\n".join(rows)
