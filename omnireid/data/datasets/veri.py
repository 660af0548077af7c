"""VeRi-776 (Liu et al., ICME 2016): ``image_train/``, ``image_query/``, ``image_test/``, 20 cameras."""
from __future__ import annotations

import os

from . import DATASET_REGISTRY
from .bases import ReidDataset
from .market1501 import read_image_folder


@DATASET_REGISTRY.register()
class VeRi(ReidDataset):
    """VeRi-776: 576 training and 200 test vehicles; names ``0001_c001_00016450_0.jpg`` (vehicle, camera)."""

    dataset_dir = "VeRi"
    marker = "image_train"
    layout = (
        "  <DATASETS.ROOT>/VeRi/\n"
        "    image_train/0001_c001_00016450_0.jpg ...\n"
        "    image_query/0002_c002_00030600_0.jpg ...\n"
        "    image_test/0002_c003_00084280_0.jpg ..."
    )

    def __init__(self, root: str = "datasets") -> None:
        folder = self.locate(root)
        none: frozenset[int] = frozenset()
        super().__init__(
            read_image_folder(type(self), os.path.join(folder, "image_train"), none),
            read_image_folder(type(self), os.path.join(folder, "image_query"), none),
            read_image_folder(type(self), os.path.join(folder, "image_test"), none),
        )
