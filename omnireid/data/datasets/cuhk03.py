"""CUHK03 (Li et al., CVPR 2014) under the new 767/700 protocol (Zhong et al., CVPR 2017)."""
from __future__ import annotations

import os

import numpy as np

from omnireid.utils.errors import ConfigError, MissingDependencyError

from . import DATASET_REGISTRY
from .bases import DatasetLayoutError, Item, ReidDataset, parse_int, reid_item

_SPLIT_FILES = {True: "cuhk03_new_protocol_config_labeled.mat", False: "cuhk03_new_protocol_config_detected.mat"}
_IMAGE_FOLDERS = {True: "images_labeled", False: "images_detected"}
_SUPPORTED_SPLITS = ("new",)


def _mat_string(value) -> str:
    """A MATLAB cell entry (nested 1x1 arrays) as a Python string."""
    while not isinstance(value, str):
        value = np.asarray(value).ravel()[0]
    return value


@DATASET_REGISTRY.register()
class CUHK03(ReidDataset):
    """CUHK03 new protocol, labeled (``DATASETS.CUHK03_LABELED True``) or detected boxes.

    The split file holds ``filelist`` (image names like ``1_001_1_01.png``: camera pair, person,
    camera, image), ``labels`` (person ids), ``train_idx`` / ``query_idx`` / ``gallery_idx`` (1-based
    rows). The camera is the third ``_`` field of the name (1 or 2, 0-based here).
    """

    dataset_dir = "cuhk03"
    marker = ""
    layout = (
        "  <DATASETS.ROOT>/cuhk03/\n"
        "    images_labeled/1_001_1_01.png ...    images_detected/1_001_1_01.png ...\n"
        "    cuhk03_new_protocol_config_labeled.mat  cuhk03_new_protocol_config_detected.mat\n"
        "      (fields: filelist, labels, train_idx, query_idx, gallery_idx)"
    )

    def __init__(self, root: str = "datasets", labeled: bool = False, split: str = "new") -> None:
        if split not in _SUPPORTED_SPLITS:
            raise ConfigError(f"DATASETS.CUHK03_SPLIT {split!r} is not supported; use one of {_SUPPORTED_SPLITS}")
        split_name, image_name = _SPLIT_FILES[labeled], _IMAGE_FOLDERS[labeled]
        folder = self._locate_for(root, split_name)
        image_dir = self.require(os.path.join(folder, image_name))
        split_path = os.path.join(folder, split_name)
        try:
            from scipy.io import loadmat
        except ImportError as exc:  # scipy is only needed for this dataset
            raise MissingDependencyError("CUHK03 reads its MATLAB split files with scipy: pip install scipy") from exc
        try:
            mat = loadmat(split_path)
        except Exception as exc:
            raise DatasetLayoutError(f"{type(self).__name__}: cannot read {split_path}: {exc}") from exc
        missing = [k for k in ("filelist", "labels", "train_idx", "query_idx", "gallery_idx") if k not in mat]
        if missing:
            raise DatasetLayoutError(f"{type(self).__name__}: {split_path} lacks {missing}. Official layout:\n{self.layout}")
        names = [_mat_string(v) for v in np.asarray(mat["filelist"]).ravel()]
        labels = np.asarray(mat["labels"]).ravel().astype(np.int64)
        if len(names) != len(labels):
            raise DatasetLayoutError(f"{split_path}: filelist has {len(names)} entries but labels has {len(labels)}")

        def rows(key: str) -> list[Item]:
            items = []
            for row in np.asarray(mat[key]).ravel().astype(np.int64):
                if not 1 <= row <= len(names):
                    raise DatasetLayoutError(f"{split_path}: {key} holds row {row}, outside 1..{len(names)}")
                name = names[row - 1]
                fields = name.split("_")
                camera = parse_int(fields[2], negative=False) if len(fields) >= 4 else None
                if camera is None:
                    raise DatasetLayoutError(f"{split_path}: image name {name!r} is not '<pair>_<pid>_<camera>_<index>.png'")
                items.append(reid_item(os.path.join(image_dir, name), int(labels[row - 1]), camera - 1))
            return items

        super().__init__(rows("train_idx"), rows("query_idx"), rows("gallery_idx"))

    @classmethod
    def _locate_for(cls, root: str, split_name: str) -> str:
        for candidate in (os.path.join(root, cls.dataset_dir), root):
            if os.path.isfile(os.path.join(candidate, split_name)):
                return candidate
        raise DatasetLayoutError(
            f"{cls.__name__}: dataset not found: expected {os.path.join(root, cls.dataset_dir, split_name)} "
            f"(or {os.path.join(root, split_name)}). Official layout:\n{cls.layout}")

    @classmethod
    def from_config(cls, cfg) -> "CUHK03":
        from .bases import datasets_root

        return cls(root=datasets_root(cfg), labeled=cfg.DATASETS.CUHK03_LABELED, split=cfg.DATASETS.CUHK03_SPLIT)
