"""VeRi-Wild (Lou et al., CVPR 2019): ``<vehicle>/<image>`` list files, cameras in ``vehicle_info.txt``."""
from __future__ import annotations

import os

from . import DATASET_REGISTRY
from .bases import Item, ReidDataset, datasets_root, parse_int, reid_item
from .vehicleid import test_size_error

TEST_LISTS = {"small": "test_3000", "medium": "test_5000", "large": "test_10000"}


@DATASET_REGISTRY.register()
class VeRiWild(ReidDataset):
    """VeRi-Wild with the small (3000), medium (5000) or large (10000 vehicles) test set.

    ``test_<N>_query.txt`` lists the queries and ``test_<N>.txt`` the gallery (which, officially, also
    holds the queries: the same-identity same-camera filter removes a query's own image).
    ``vehicle_info.txt`` has a header line then ``<vehicle>/<image>;<camera>;<time>;<model>;<type>;<colour>``.
    """

    dataset_dir = ("VERI-Wild", "VeRi-Wild")
    marker = os.path.join("train_test_split", "train_list.txt")
    layout = (
        "  <DATASETS.ROOT>/VERI-Wild/\n"
        "    images/00001/000001.jpg ...\n"
        "    train_test_split/train_list.txt  test_3000.txt  test_3000_query.txt  (5000, 10000 likewise)\n"
        "      (lines: '00001/000001')\n"
        "    train_test_split/vehicle_info.txt\n"
        "      (header, then '00001/000001;018;2018-03-11 12:09:23;Chevrolet;SUV;white')"
    )

    def __init__(self, root: str = "datasets", test_size: str = "small") -> None:
        if test_size not in TEST_LISTS:
            raise test_size_error("DATASETS.VERIWILD_TEST_SIZE", test_size, TEST_LISTS)
        folder = self.locate(root)
        image_dir = self.require(os.path.join(folder, "images"))
        split_dir = os.path.join(folder, "train_test_split")
        cameras = self._read_cameras(os.path.join(split_dir, "vehicle_info.txt"))
        name = TEST_LISTS[test_size]
        super().__init__(
            self._read_list(image_dir, os.path.join(split_dir, "train_list.txt"), cameras),
            self._read_list(image_dir, os.path.join(split_dir, f"{name}_query.txt"), cameras),
            self._read_list(image_dir, os.path.join(split_dir, f"{name}.txt"), cameras),
        )

    @classmethod
    def _read_cameras(cls, info_path: str) -> dict[str, int]:
        cameras = {}
        for number, line in cls.read_lines(info_path)[1:]:  # the first line is the header
            fields = line.split(";")
            camera = parse_int(fields[1], negative=False) if len(fields) >= 2 else None
            if camera is None or "/" not in fields[0]:
                raise cls.bad_line(info_path, number, line, "'<vehicle>/<image>;<camera>;...'")
            cameras[fields[0].strip()] = camera
        return cameras

    @classmethod
    def _read_list(cls, image_dir: str, list_path: str, cameras: dict[str, int]) -> list[Item]:
        items = []
        for number, line in cls.read_lines(list_path):
            key = line.split()[0]
            key = key[: -len(".jpg")] if key.endswith(".jpg") else key
            vehicle = parse_int(key.split("/")[0], negative=False)
            if "/" not in key or vehicle is None:
                raise cls.bad_line(list_path, number, line, "'<vehicle>/<image>'")
            if key not in cameras:
                raise cls.bad_line(list_path, number, line, f"an image listed in {os.path.join(os.path.dirname(list_path), 'vehicle_info.txt')}")
            items.append(reid_item(os.path.join(image_dir, key + ".jpg"), vehicle, cameras[key]))
        return items

    @classmethod
    def from_config(cls, cfg) -> "VeRiWild":
        return cls(root=datasets_root(cfg), test_size=cfg.DATASETS.VERIWILD_TEST_SIZE)


@DATASET_REGISTRY.register()
class SmallVeRiWild(VeRiWild):
    """VeRi-Wild with the 3000-vehicle test set."""

    @classmethod
    def from_config(cls, cfg) -> "VeRiWild":
        return cls(root=datasets_root(cfg), test_size="small")


@DATASET_REGISTRY.register()
class MediumVeRiWild(VeRiWild):
    """VeRi-Wild with the 5000-vehicle test set."""

    @classmethod
    def from_config(cls, cfg) -> "VeRiWild":
        return cls(root=datasets_root(cfg), test_size="medium")


@DATASET_REGISTRY.register()
class LargeVeRiWild(VeRiWild):
    """VeRi-Wild with the 10000-vehicle test set."""

    @classmethod
    def from_config(cls, cfg) -> "VeRiWild":
        return cls(root=datasets_root(cfg), test_size="large")
