"""MSMT17 (Wei et al., CVPR 2018): images listed in ``list_*.txt`` files, 15 cameras."""
from __future__ import annotations

import os

from . import DATASET_REGISTRY
from .bases import DatasetLayoutError, Item, ReidDataset, parse_int, reid_item

# version folder -> (training image folder, test image folder)
_VERSIONS = {"MSMT17_V2": ("mask_train_v2", "mask_test_v2"), "MSMT17_V1": ("train", "test")}


@DATASET_REGISTRY.register()
class MSMT17(ReidDataset):
    """MSMT17, V1 or V2. Training uses ``list_train.txt`` + ``list_val.txt`` (the standard protocol).

    A list line is ``<id folder>/<image name> <pid>``, e.g. ``0000/0000_000_01_0303morning_0015_0.jpg 0``;
    the camera is the third ``_`` field of the image name (1-based in the name, 0-based here).
    """

    dataset_dir = tuple(_VERSIONS)
    marker = "list_train.txt"
    layout = (
        "  <DATASETS.ROOT>/MSMT17_V1/  (or MSMT17_V2/ with mask_train_v2/ and mask_test_v2/)\n"
        "    train/0000/0000_000_01_0303morning_0015_0.jpg ...\n"
        "    test/0000/0000_000_01_0303morning_0016_0.jpg ...\n"
        "    list_train.txt  list_val.txt  list_query.txt  list_gallery.txt\n"
        "      (lines: '0000/0000_000_01_0303morning_0015_0.jpg 0')"
    )

    def __init__(self, root: str = "datasets") -> None:
        folder = self.locate(root)
        version = os.path.basename(os.path.normpath(folder))
        train_name, test_name = _VERSIONS.get(version) or self._detect_image_folders(folder)
        train_dir = self.require(os.path.join(folder, train_name))
        test_dir = self.require(os.path.join(folder, test_name))
        train = self._read_list(train_dir, os.path.join(folder, "list_train.txt"))
        train += self._read_list(train_dir, os.path.join(folder, "list_val.txt"))
        super().__init__(train, self._read_list(test_dir, os.path.join(folder, "list_query.txt")),
                         self._read_list(test_dir, os.path.join(folder, "list_gallery.txt")))

    @classmethod
    def _detect_image_folders(cls, folder: str) -> tuple[str, str]:
        """DATASETS.ROOT is the version folder itself: find which version's image folders it holds."""
        for train_name, test_name in _VERSIONS.values():
            if os.path.isdir(os.path.join(folder, train_name)):
                return train_name, test_name
        raise DatasetLayoutError(f"{cls.__name__}: {folder} has list_train.txt but neither train/ nor "
                                 f"mask_train_v2/. Official layout:\n{cls.layout}")

    @classmethod
    def _read_list(cls, image_dir: str, list_path: str) -> list[Item]:
        items = []
        for number, line in cls.read_lines(list_path):
            parts = line.split()
            pid = parse_int(parts[1]) if len(parts) == 2 else None
            if pid is None:
                raise cls.bad_line(list_path, number, line, "'<folder>/<image>.jpg <pid>'")
            name = os.path.basename(parts[0]).split("_")
            camera = parse_int(name[2], negative=False) if len(name) >= 3 else None
            if camera is None:
                raise cls.bad_line(list_path, number, line, "an image name '<pid>_<index>_<camera>_...jpg'")
            items.append(reid_item(os.path.join(image_dir, parts[0]), pid, camera - 1))
        return items
