"""Custom data: CSV lists of ``path,pid,camid`` for train, query and gallery."""
from __future__ import annotations

from . import DATASET_REGISTRY
from .bases import DatasetLayoutError, Item, ReidDataset, parse_int, reid_item
from .csv_lists import read_csv_list

HEADER = ("path", "pid", "camid")


def read_csv_items(path: str) -> list[Item]:
    """Rows ``path,pid,camid`` (integers for pid and camid); the reading rules of :func:`read_csv_list`."""
    items: list[Item] = []
    for row in read_csv_list(path, "CustomCSV", HEADER)[1]:
        labels = {name: parse_int(value) for name, value in zip(HEADER[1:], row.cells)}
        for name, value in zip(HEADER[1:], row.cells):
            if labels[name] is None:
                raise DatasetLayoutError(f"{row.where}: {name} must be an integer, got {value!r}")
        items.append(reid_item(row.image, labels["pid"], labels["camid"]))
    return items


@DATASET_REGISTRY.register()
class CustomCSV(ReidDataset):
    """Your own data as three CSV lists, set by ``DATASETS.CSV.TRAIN/QUERY/GALLERY``.

    Each row is ``path,pid,camid``: the image file, an integer identity and an integer camera index.
    A header row ``path,pid,camid`` is optional. Relative image paths are resolved against the folder
    of the CSV file; the CSV paths themselves are absolute or relative to the working directory. A list
    may be left empty (``""``) when it is not used, e.g. no query/gallery for a training-only set.
    Evaluation follows the Market-1501 protocol: gallery images with the query's identity *and* camera
    are ignored, so give images of different cameras different ``camid`` values (or give every query
    camera 0 and every gallery image camera 1 when you have no camera information). Example::

        # /data/shop/train.csv
        path,pid,camid
        images/0001_front.jpg,1,0
        images/0001_side.jpg,1,1
        images/0002_front.jpg,2,0
        /mnt/extra/0002_back.jpg,2,2

        # config.yaml
        DATASETS:
          NAMES: ["CustomCSV"]
          TESTS: ["CustomCSV"]
          CSV:
            TRAIN: /data/shop/train.csv
            QUERY: /data/shop/query.csv
            GALLERY: /data/shop/gallery.csv
    """

    layout = "  CSV files with rows 'path,pid,camid' (DATASETS.CSV.TRAIN / QUERY / GALLERY)"

    def __init__(self, train_csv: str = "", query_csv: str = "", gallery_csv: str = "") -> None:
        if not (train_csv or query_csv or gallery_csv):
            raise DatasetLayoutError("CustomCSV: set DATASETS.CSV.TRAIN and/or DATASETS.CSV.QUERY + "
                                     "DATASETS.CSV.GALLERY to CSV files of 'path,pid,camid' rows")
        if bool(query_csv) != bool(gallery_csv):
            raise DatasetLayoutError("CustomCSV: DATASETS.CSV.QUERY and DATASETS.CSV.GALLERY must be set together "
                                     f"(got QUERY={query_csv!r}, GALLERY={gallery_csv!r})")
        super().__init__(*(read_csv_items(p) if p else [] for p in (train_csv, query_csv, gallery_csv)))

    @classmethod
    def from_config(cls, cfg) -> "CustomCSV":
        files = cfg.DATASETS.CSV
        return cls(train_csv=files.TRAIN, query_csv=files.QUERY, gallery_csv=files.GALLERY)
