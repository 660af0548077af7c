"""What every dataset is: train / query / gallery lists of ``(img_path, pid, camid)``.

A dataset class reads one official on-disk layout and nothing else; relabelling, namespacing and
combining several sets are the loader's job (``omnireid.data.build``).
"""
from __future__ import annotations

import logging
import os
from typing import ClassVar, Sequence

logger = logging.getLogger(__name__)

Item = tuple[str, int, int]  # (img_path, pid, camid)

DATASETS_ENV = "OMNIREID_DATASETS"


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder or list file is missing or malformed; the message names the path and layout."""


def datasets_root(cfg) -> str:
    """``DATASETS.ROOT``, else ``$OMNIREID_DATASETS``, else ``"datasets"``."""
    root = cfg.DATASETS.ROOT or os.environ.get(DATASETS_ENV, "") or "datasets"
    return os.path.expanduser(root)


class ReidDataset:
    """A reID benchmark split into a training list and a query/gallery test protocol.

    Subclasses set ``dataset_dir`` (the folder name under the root), ``marker`` (a path inside the
    dataset folder that identifies it) and ``layout`` (the official layout, quoted in errors), and
    build their lists in ``__init__``. ``junk_pids`` are identities that never train (e.g. Market's
    distractors 0 and junk -1 when ``DATASETS.COMBINEALL`` adds the test images to training).
    """

    dataset_dir: ClassVar[str | tuple[str, ...]] = ""  # folder name(s) under the root, first match wins
    marker: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    junk_pids: ClassVar[frozenset[int]] = frozenset()

    def __init__(self, train: Sequence[Item], query: Sequence[Item], gallery: Sequence[Item]) -> None:
        self.train: list[Item] = list(train)
        self.query: list[Item] = list(query)
        self.gallery: list[Item] = list(gallery)

    @classmethod
    def from_config(cls, cfg) -> "ReidDataset":
        """Build from a config; datasets with extra options (test size, CSV files) override this."""
        return cls(root=datasets_root(cfg))  # type: ignore[call-arg]

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def num_train_pids(self) -> int:
        return len({pid for _, pid, _ in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({cam for _, _, cam in self.train})

    def combined_train(self) -> list[tuple[str, int, int, str]]:
        """Training items of ``DATASETS.COMBINEALL``: train + query + gallery, junk identities removed.

        The fourth field says which split an item came from: test identities are different people
        from training identities with possibly equal numbers, so the loader namespaces them apart.
        """
        out = [(path, pid, cam, "train") for path, pid, cam in self.train]
        for path, pid, cam in self.query + self.gallery:
            if pid not in self.junk_pids:
                out.append((path, pid, cam, "test"))
        return out

    def summary(self) -> str:
        rows = []
        for split, items in (("train", self.train), ("query", self.query), ("gallery", self.gallery)):
            rows.append(f"  {split:8s} | {len({p for _, p, _ in items}):6d} ids | {len(items):7d} images | "
                        f"{len({c for _, _, c in items}):4d} cameras")
        return f"=> {self.name} loaded\n" + "\n".join(rows)

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
        with open(path, encoding="utf-8") as f:
            return [(number, line.strip()) for number, line in enumerate(f, 1) if line.strip()]

    @classmethod
    def bad_line(cls, path: str, number: int, line: str, expected: str) -> DatasetLayoutError:
        return DatasetLayoutError(f"{cls.__name__}: {path}, line {number}: expected {expected}, got {line!r}")
