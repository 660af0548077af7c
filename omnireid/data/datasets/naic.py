"""NAIC person reID (the AI competition of China's National Artificial Intelligence Challenge), in the
folder layouts and list files FastReID's ``projects/NAIC20`` reads.

Two label-list formats: NAIC 2020 ``<image name>:<pid>`` (images in ``images/``) and NAIC 2019
``<relative path> <pid>``. Every line is read: no hard-coded truncation of the lists (FastReID cut
them to fixed lengths); drop rare identities with ``DATASETS.MIN_IMAGES_PER_ID`` instead (FastReID's
``RM_LT`` = 2). NAIC images carry no camera: training images are camera 0; validation queries are
camera 0 and the validation gallery camera 1 (as FastReID), so no gallery image is junk. The
competition's test sets (``query/`` and ``gallery/`` folders of unlabelled ``.png``) are
``NAIC20_R2A`` / ``NAIC20_R2B``: ranked by ``omnireid submit``, not evaluated.
"""
from __future__ import annotations

import os
from typing import Callable, ClassVar

from . import DATASET_REGISTRY
from .bases import DatasetLayoutError, Item, ReidDataset, TestSet, parse_int, reid_item

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def parse_colon_line(line: str) -> tuple[str, int] | None:
    """``00000001.png:123`` (NAIC 2020) -> (image, pid)."""
    name, sep, pid = line.rpartition(":")
    value = parse_int(pid) if sep else None
    return (name.strip(), value) if name.strip() and value is not None else None


def parse_space_line(line: str) -> tuple[str, int] | None:
    """``train_set/00000001.png 123`` (NAIC 2019) -> (path, pid)."""
    parts = line.split()
    value = parse_int(parts[1]) if len(parts) == 2 else None
    return (parts[0], value) if value is not None else None


class NaicListDataset(ReidDataset):
    """A NAIC training folder: a label list (``train_lists``, the first present), images under
    ``image_dir``, optional validation ``val_query.txt`` / ``val_gallery.txt`` in the same format."""

    image_dir: ClassVar[str] = "images"
    train_lists: ClassVar[tuple[str, ...]] = ("label.txt",)
    parse_line: ClassVar[Callable[[str], tuple[str, int] | None]] = staticmethod(parse_colon_line)
    expected: ClassVar[str] = "'<image>.png:<pid>'"
    val_lists: ClassVar[tuple[str, str]] = ("val_query.txt", "val_gallery.txt")

    def __init__(self, root: str = "datasets") -> None:
        folder = self.locate(root)
        image_dir = self.require(os.path.join(folder, self.image_dir))
        present = [os.path.join(folder, n) for n in self.train_lists if os.path.isfile(os.path.join(folder, n))]
        if not present:
            raise DatasetLayoutError(f"{type(self).__name__}: none of {', '.join(self.train_lists)} in {folder}. "
                                     f"Official layout:\n{self.layout}")
        train = self.read_list(present[0], image_dir, camid=0)
        query, gallery = [], []
        q_path, g_path = (os.path.join(folder, n) for n in self.val_lists)
        if os.path.isfile(q_path) and os.path.isfile(g_path):
            query, gallery = self.read_list(q_path, image_dir, camid=0), self.read_list(g_path, image_dir, camid=1)
        super().__init__(train, query, gallery)

    @classmethod
    def read_list(cls, list_path: str, image_dir: str, camid: int) -> list[Item]:
        """Every line of ``list_path`` as a reID item (a malformed line is an error naming the file and line)."""
        items = []
        for number, line in cls.read_lines(list_path):
            parsed = cls.parse_line(line)
            if parsed is None:
                raise cls.bad_line(list_path, number, line, cls.expected)
            name, pid = parsed
            items.append(reid_item(os.path.join(image_dir, name), pid, camid))
        return items


@DATASET_REGISTRY.register()
class NAIC20_R2(NaicListDataset):  # noqa: N801 - FastReID's registered name
    """NAIC 2020 round 2 (fusai) training data; FastReID's cleaned list first, the official one otherwise."""

    dataset_dir = ("naic/2020_NAIC/fusai/train", "NAIC20_R2")
    marker = "images"
    train_lists = ("naic20r2_train_list_clean.txt", "label.txt")
    layout = ("  <DATASETS.ROOT>/naic/2020_NAIC/fusai/train/\n"
              "    images/00000001.png ...\n"
              "    naic20r2_train_list_clean.txt (or label.txt)   lines '00000001.png:123'\n"
              "    val_query.txt  val_gallery.txt (optional)       lines '00000002.png:456'")


@DATASET_REGISTRY.register()
class NAIC20_R1(NaicListDataset):  # noqa: N801
    """NAIC 2020 round 1 (chusai) training data (``label.txt``, every line)."""

    dataset_dir = ("naic/2020_NAIC/chusai/train", "NAIC20_R1")
    marker = "images"
    layout = ("  <DATASETS.ROOT>/naic/2020_NAIC/chusai/train/\n"
              "    images/00000001.png ...\n"
              "    label.txt   lines '00000001.png:123'")


@DATASET_REGISTRY.register()
class NAIC19(NaicListDataset):
    """NAIC 2019 final (fusai) training data: ``<path> <pid>`` lines, paths relative to the folder."""

    dataset_dir = ("naic/2019_NAIC/fusai", "NAIC19")
    marker = "train_set"
    image_dir = ""
    train_lists = ("train_list_clean.txt", "train_list.txt")
    parse_line = staticmethod(parse_space_line)
    expected = "'<folder>/<image>.png <pid>'"
    layout = ("  <DATASETS.ROOT>/naic/2019_NAIC/fusai/\n"
              "    train_set/00000001.png ...\n"
              "    train_list_clean.txt (or train_list.txt)   lines 'train_set/00000001.png 123'")


class NaicTestLayout(ReidDataset):
    """A competition test set: ``query/`` and ``gallery/`` folders of images without labels
    (items carry only ``img_path``; queries first, in file-name order)."""

    fields = ()
    marker = "query"

    def __init__(self, root: str = "datasets") -> None:
        folder = self.locate(root)
        query = self._images(self.require(os.path.join(folder, "query")))
        gallery = self._images(self.require(os.path.join(folder, "gallery")))
        super().__init__([], query, gallery)

    @classmethod
    def _images(cls, folder: str) -> list[Item]:
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            raise DatasetLayoutError(f"{cls.__name__}: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}. "
                                     f"Official layout:\n{cls.layout}")
        return [{"img_path": os.path.join(folder, n)} for n in names]

    def test_sets(self) -> list[TestSet]:
        return [TestSet(self.name, self.test_protocol, self.query + self.gallery,
                        {"num_query": len(self.query)})]

    def combined_train(self) -> list[tuple[Item, str]]:
        return []  # unlabelled: nothing to train on


@DATASET_REGISTRY.register()
class NAIC20_R2A(NaicTestLayout):  # noqa: N801
    """NAIC 2020 round 2, test set A (unlabelled)."""

    dataset_dir = ("naic/round2/image_A", "image_A")
    layout = "  <DATASETS.ROOT>/naic/round2/image_A/\n    query/00000001.png ...\n    gallery/00000002.png ..."


@DATASET_REGISTRY.register()
class NAIC20_R2B(NaicTestLayout):  # noqa: N801
    """NAIC 2020 round 2, test set B (unlabelled)."""

    dataset_dir = ("naic/round2/image_B", "image_B")
    layout = "  <DATASETS.ROOT>/naic/round2/image_B/\n    query/00000001.png ...\n    gallery/00000002.png ..."
