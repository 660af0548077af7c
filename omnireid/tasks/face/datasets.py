"""Face datasets: training identities from insightface RecordIO, an identity-folder tree or a CSV, and
verification test sets from insightface ``.bin`` files (protocol ``verification``).

Images inside container files are addressed as ``<container>::<member>`` (a RecordIO key, a ``.bin``
index); :mod:`omnireid.data.containers` reads them through the openers registered at the bottom.
"""
from __future__ import annotations

import os

import numpy as np

from omnireid.data.containers import IMAGE_CONTAINER_REGISTRY, member_path
from omnireid.data.datasets import DATASET_REGISTRY
from omnireid.data.datasets.bases import DatasetLayoutError, ImageSetDataset, Item, TestSet, datasets_root
from omnireid.data.datasets.csv_lists import read_csv_list

from .recordio import RecordIOError, RecordIOReader, insightface_labels
from .verification_bin import read_verification_bin

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VERIFICATION_PROTOCOL = "verification"


def resolve(cfg, path: str) -> str:
    """``path`` as given when absolute, else under ``DATASETS.ROOT``."""
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(datasets_root(cfg), path)


def _require(key: str, value: str) -> str:
    if not value:
        raise DatasetLayoutError(f"{key} is empty: set it to your face data (absolute or relative to DATASETS.ROOT)")
    return value


class FaceTrainDataset(ImageSetDataset):
    """Training identities (``targets``); ``identity_names[target]`` is the original identity."""

    fields = ("targets",)
    test_protocol = VERIFICATION_PROTOCOL

    def __init__(self, train: list[Item], identity_names: list[str]) -> None:
        super().__init__(train)
        self.identity_names = identity_names

    def metadata(self) -> dict:
        return {"class_names": list(self.identity_names)}

    def label_name(self, target: int) -> str:
        return self.identity_names[target]


def _relabel(pairs: list[tuple[str, str]], where: str) -> tuple[list[Item], list[str]]:
    """Items with contiguous labels in sorted identity order, and the identity names."""
    if not pairs:
        raise DatasetLayoutError(f"{where}: no images found")
    names = sorted({identity for _, identity in pairs})
    label = {name: i for i, name in enumerate(names)}
    return [{"img_path": path, "targets": label[identity]} for path, identity in pairs], names


@DATASET_REGISTRY.register()
class FaceFolder(FaceTrainDataset):
    """An identity-folder tree ``FACE.FOLDER/<identity>/<image>`` (jpg/png/bmp/webp, any depth below)."""

    layout = "  <FACE.FOLDER>/<identity>/<image>.jpg  (one folder per person)"

    def __init__(self, folder: str) -> None:
        if not os.path.isdir(folder):
            raise DatasetLayoutError(f"FaceFolder: FACE.FOLDER {folder!r} is not a folder. Expected:\n{self.layout}")
        pairs = []
        for identity in sorted(os.listdir(folder)):
            top = os.path.join(folder, identity)
            if not os.path.isdir(top):
                continue
            for dirpath, _, files in sorted(os.walk(top)):
                pairs += [(os.path.join(dirpath, f), identity) for f in sorted(files)
                          if f.lower().endswith(IMAGE_SUFFIXES)]
        super().__init__(*_relabel(pairs, f"FaceFolder: {folder}"))

    @classmethod
    def from_config(cls, cfg) -> "FaceFolder":
        return cls(resolve(cfg, _require("FACE.FOLDER", cfg.FACE.FOLDER)))


@DATASET_REGISTRY.register()
class FaceCSV(FaceTrainDataset):
    """Rows ``path,identity`` (header optional; identity any string; paths relative to the CSV's folder)."""

    layout = "  FACE.CSV: rows 'path,identity'"

    def __init__(self, csv_path: str) -> None:
        pairs = []
        for row in read_csv_list(csv_path, "FaceCSV", ("path", "identity"))[1]:
            if not row.cells[0]:
                raise DatasetLayoutError(f"{row.where}: empty identity")
            pairs.append((row.image, row.cells[0]))
        super().__init__(*_relabel(pairs, f"FaceCSV: {csv_path}"))

    @classmethod
    def from_config(cls, cfg) -> "FaceCSV":
        return cls(resolve(cfg, _require("FACE.CSV", cfg.FACE.CSV)))


@DATASET_REGISTRY.register()
class FaceRecordIO(FaceTrainDataset):
    """insightface training data: ``FACE.DATA_DIR/train.rec`` + ``train.idx`` (read without mxnet).

    Classes come from the identity records (insightface's layout) or each record's label; the
    ``property`` file (``classes,height,width``), when present, must agree.
    """

    layout = "  <FACE.DATA_DIR>/train.rec, train.idx[, property]  (insightface, e.g. faces_emore/)"

    def __init__(self, data_dir: str) -> None:
        rec = os.path.join(data_dir, "train.rec")
        try:
            reader = RecordIOReader(rec)
        except FileNotFoundError as exc:
            raise DatasetLayoutError(f"FaceRecordIO: {exc}. Expected:\n{self.layout}") from None
        try:
            pairs = insightface_labels(reader)
        except RecordIOError as exc:
            raise DatasetLayoutError(f"FaceRecordIO: {exc}") from None
        finally:
            reader.close()
        if not pairs:
            raise DatasetLayoutError(f"FaceRecordIO: {rec} holds no images")
        classes = sorted({c for _, c in pairs})
        if classes != list(range(len(classes))):
            raise DatasetLayoutError(f"FaceRecordIO: {rec}: labels are not the contiguous classes 0..{len(classes) - 1}")
        prop = os.path.join(data_dir, "property")
        if os.path.isfile(prop):
            declared = open(prop, encoding="utf-8").read().strip().split(",")[0]
            if declared.isdigit() and int(declared) != len(classes):
                raise DatasetLayoutError(f"FaceRecordIO: {prop} declares {declared} classes but {rec} has "
                                         f"{len(classes)}")
        items = [{"img_path": member_path(rec, key), "targets": cls} for key, cls in pairs]
        super().__init__(items, [str(c) for c in classes])

    @classmethod
    def from_config(cls, cfg) -> "FaceRecordIO":
        return cls(resolve(cfg, _require("FACE.DATA_DIR", cfg.FACE.DATA_DIR)))


@DATASET_REGISTRY.register()
class FaceVerification(ImageSetDataset):
    """Verification test sets ``FACE.VAL_DIR/<name>.bin`` for every name in ``FACE.VAL_TARGETS``.

    Each set is a :class:`TestSet` named like its file, protocol ``verification``: items are the
    2N images, ``meta["pairs"]`` the pairs ``(2i, 2i+1)`` and ``meta["issame"]`` their labels.
    """

    fields = ()
    test_protocol = VERIFICATION_PROTOCOL
    layout = "  <FACE.VAL_DIR>/<name>.bin for each FACE.VAL_TARGETS name (insightface: lfw, cfp_fp, agedb_30)"

    def __init__(self, val_dir: str, targets: list[str]) -> None:
        super().__init__([])
        if not targets:
            raise DatasetLayoutError("FaceVerification: FACE.VAL_TARGETS is empty; name the .bin sets to evaluate")
        self._sets = []
        for name in targets:
            path = os.path.join(val_dir, f"{name}.bin")
            if not os.path.isfile(path):
                found = sorted(f[:-4] for f in os.listdir(val_dir) if f.endswith(".bin")) if os.path.isdir(val_dir) else []
                raise DatasetLayoutError(f"FaceVerification: {path} not found (FACE.VAL_TARGETS {name!r}); "
                                         f".bin sets in {val_dir}: {found or 'none'}")
            images, issame = read_verification_bin(path)
            items = [{"img_path": member_path(path, i)} for i in range(len(images))]
            pairs = np.arange(len(images), dtype=np.int64).reshape(-1, 2)
            self._sets.append(TestSet(name, VERIFICATION_PROTOCOL, items, {"pairs": pairs, "issame": issame}))

    @classmethod
    def from_config(cls, cfg) -> "FaceVerification":
        val_dir = cfg.FACE.VAL_DIR or _require("FACE.VAL_DIR (or FACE.DATA_DIR)", cfg.FACE.DATA_DIR)
        return cls(resolve(cfg, val_dir), list(cfg.FACE.VAL_TARGETS))

    def test_sets(self) -> list[TestSet]:
        return list(self._sets)


class _BinImages:
    """The images of a ``.bin`` set, loaded once per process (literal-only unpickling)."""

    def __init__(self, path: str) -> None:
        self.images, _ = read_verification_bin(path)

    def read(self, member: str) -> bytes:
        index = int(member)
        if not 0 <= index < len(self.images):
            raise ValueError(f"no image {index} in a set of {len(self.images)}")
        return self.images[index]


class _RecordImages:
    """The images of a RecordIO file by key."""

    def __init__(self, path: str) -> None:
        self.reader = RecordIOReader(path)

    def read(self, member: str) -> bytes:
        return self.reader.read_image(int(member))


IMAGE_CONTAINER_REGISTRY.register(".rec")(_RecordImages)
IMAGE_CONTAINER_REGISTRY.register(".bin")(_BinImages)
