"""VehicleID (Liu et al., CVPR 2016): list files of ``<image id> <vehicle id>``, no camera labels."""
from __future__ import annotations

import operator
import os

import numpy as np

from omnireid.utils.errors import ConfigError

from . import DATASET_REGISTRY
from .bases import Item, ReidDataset, datasets_root, parse_int, reid_item

TEST_LISTS = {"small": "test_list_800.txt", "medium": "test_list_1600.txt", "large": "test_list_2400.txt"}


def test_size_error(key: str, value: str, sizes: dict[str, str]) -> ConfigError:
    return ConfigError(f"{key} must be one of {sorted(sizes)}, got {value!r}")


@DATASET_REGISTRY.register()
class VehicleID(ReidDataset):
    """VehicleID with the small (800), medium (1600) or large (2400 vehicles) test list.

    Standard protocol: for every test vehicle one random image goes to the gallery and the others are
    queries (seeded by ``split_seed``, so every run evaluates the same split). VehicleID has no cameras:
    training images get camera 0, queries camera 0 and gallery images camera 1, so the same-camera
    filter of the Market-1501 protocol never removes a true match.
    """

    dataset_dir = ("VehicleID_V1.0", "vehicleid", "VehicleID")
    marker = os.path.join("train_test_split", "train_list.txt")
    layout = (
        "  <DATASETS.ROOT>/VehicleID_V1.0/\n"
        "    image/0000001.jpg ...\n"
        "    train_test_split/train_list.txt  test_list_800.txt  test_list_1600.txt  test_list_2400.txt\n"
        "      (lines: '<image id> <vehicle id>', e.g. '0004165 3')"
    )

    def __init__(self, root: str = "datasets", test_size: str = "small", split_seed: int = 0) -> None:
        if test_size not in TEST_LISTS:
            raise test_size_error("DATASETS.VEHICLEID_TEST_SIZE", test_size, TEST_LISTS)
        folder = self.locate(root)
        image_dir = self.require(os.path.join(folder, "image"))
        split_dir = os.path.join(folder, "train_test_split")
        train = [reid_item(path, vid, 0) for path, vid in self._read_list(image_dir, os.path.join(split_dir, "train_list.txt"))]
        test = self._read_list(image_dir, os.path.join(split_dir, TEST_LISTS[test_size]))
        order = np.random.default_rng(split_seed).permutation(len(test))
        query: list[Item] = []
        gallery: list[Item] = []
        seen: set[int] = set()
        for index in order:
            path, vid = test[index]
            if vid in seen:
                query.append(reid_item(path, vid, 0))
            else:
                seen.add(vid)
                gallery.append(reid_item(path, vid, 1))
        by_path = operator.itemgetter("img_path")
        super().__init__(train, sorted(query, key=by_path), sorted(gallery, key=by_path))

    @classmethod
    def _read_list(cls, image_dir: str, list_path: str) -> list[tuple[str, int]]:
        out = []
        for number, line in cls.read_lines(list_path):
            parts = line.split()
            vehicle = parse_int(parts[1], negative=False) if len(parts) == 2 else None
            if vehicle is None:
                raise cls.bad_line(list_path, number, line, "'<image id> <vehicle id>'")
            out.append((os.path.join(image_dir, parts[0] + ".jpg"), vehicle))
        return out

    @classmethod
    def from_config(cls, cfg) -> "VehicleID":
        return cls(root=datasets_root(cfg), test_size=cfg.DATASETS.VEHICLEID_TEST_SIZE)


@DATASET_REGISTRY.register()
class SmallVehicleID(VehicleID):
    """VehicleID with the 800-vehicle test list."""

    @classmethod
    def from_config(cls, cfg) -> "VehicleID":
        return cls(root=datasets_root(cfg), test_size="small")


@DATASET_REGISTRY.register()
class MediumVehicleID(VehicleID):
    """VehicleID with the 1600-vehicle test list."""

    @classmethod
    def from_config(cls, cfg) -> "VehicleID":
        return cls(root=datasets_root(cfg), test_size="medium")


@DATASET_REGISTRY.register()
class LargeVehicleID(VehicleID):
    """VehicleID with the 2400-vehicle test list."""

    @classmethod
    def from_config(cls, cfg) -> "VehicleID":
        return cls(root=datasets_root(cfg), test_size="large")
