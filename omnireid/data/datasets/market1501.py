"""Market-1501 and DukeMTMC-reID: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` folders."""
from __future__ import annotations

import os
import re

from . import DATASET_REGISTRY
from .bases import DatasetLayoutError, Item, ReidDataset, reid_item

# "0002_c1s1_000451_03.jpg" (Market), "0001_c2_f0046182.jpg" (Duke), "-1_c1s1_000401_03.jpg" (junk)
_NAME = re.compile(r"^(-1|[0-9]+)_c([0-9]+)")


def read_image_folder(cls: type[ReidDataset], folder: str, drop_pids: frozenset[int]) -> list[Item]:
    """A reID item for every ``*.jpg`` in ``folder``; camid is 0-based (``c1`` -> 0).

    Other files (the official zips ship a ``Thumbs.db``) are ignored; a ``.jpg`` whose name does not
    follow the ``PPPP_cC...`` convention is an error naming it.
    """
    cls.require(folder)
    items = []
    for name in sorted(os.listdir(folder)):
        if not name.lower().endswith(".jpg"):
            continue
        match = _NAME.match(name)
        if match is None:
            raise DatasetLayoutError(f"{cls.__name__}: {os.path.join(folder, name)} does not follow the "
                                     f"'<pid>_c<camera>...jpg' naming of the official layout:\n{cls.layout}")
        pid, cam = int(match.group(1)), int(match.group(2))
        if pid in drop_pids:
            continue
        if cam < 1:
            raise DatasetLayoutError(f"{cls.__name__}: {os.path.join(folder, name)}: cameras are numbered from 1")
        items.append(reid_item(os.path.join(folder, name), pid, cam - 1))
    return items


@DATASET_REGISTRY.register()
class Market1501(ReidDataset):
    """Market-1501 (Zheng et al., ICCV 2015): 751 training and 750 test identities, 6 cameras.

    Protocol: pid -1 are junk boxes. They never train, and they are dropped from the gallery, which is
    exactly the official evaluation's "junk images are ignored". pid 0 are distractors and stay in the
    gallery as negatives (and are excluded when ``DATASETS.COMBINEALL`` trains on the test images).
    """

    dataset_dir = "Market-1501-v15.09.15"
    marker = "bounding_box_train"
    junk_pids = frozenset({0, -1})
    layout = (
        "  <DATASETS.ROOT>/Market-1501-v15.09.15/\n"
        "    bounding_box_train/0002_c1s1_000451_03.jpg ...\n"
        "    bounding_box_test/0000_c1s1_000151_01.jpg, -1_c1s1_000401_03.jpg ...\n"
        "    query/0001_c1s1_001051_00.jpg ..."
    )

    def __init__(self, root: str = "datasets") -> None:
        folder = self.locate(root)
        junk = frozenset({-1})
        super().__init__(
            read_image_folder(type(self), os.path.join(folder, "bounding_box_train"), junk),
            read_image_folder(type(self), os.path.join(folder, "query"), junk),
            read_image_folder(type(self), os.path.join(folder, "bounding_box_test"), junk),
        )


@DATASET_REGISTRY.register()
class DukeMTMC(ReidDataset):
    """DukeMTMC-reID (Ristani et al. 2016; Zheng et al. 2017): 702 + 702 identities (+408 distractors), 8 cameras."""

    dataset_dir = "DukeMTMC-reID"
    marker = "bounding_box_train"
    layout = (
        "  <DATASETS.ROOT>/DukeMTMC-reID/\n"
        "    bounding_box_train/0001_c2_f0046182.jpg ...\n"
        "    bounding_box_test/ ...\n"
        "    query/ ..."
    )

    def __init__(self, root: str = "datasets") -> None:
        folder = self.locate(root)
        none: frozenset[int] = frozenset()
        super().__init__(
            read_image_folder(type(self), os.path.join(folder, "bounding_box_train"), none),
            read_image_folder(type(self), os.path.join(folder, "query"), none),
            read_image_folder(type(self), os.path.join(folder, "bounding_box_test"), none),
        )
