"""The datasets of domain adaptation: the shifted synthetic target, and the pseudo-labelled target
training set each adaptation round trains on (a registered dataset, so the normal trainer reads it)."""
from __future__ import annotations

import csv
import os
from typing import Sequence

import numpy as np

from omnireid.data.datasets import DATASET_REGISTRY, DatasetLayoutError, ImageSetDataset, Item
from omnireid.data.datasets.market1501 import Market1501
from omnireid.utils.file_io import atomic_write_text

PSEUDO_LABEL_COLUMNS = ("img_path", "pseudo_label", "camid")


@DATASET_REGISTRY.register()
class SyntheticShifted(Market1501):
    """The domain-shifted synthetic people (``omnireid data synth --domain shifted``), Market-1501 layout
    in its own folder, so one config can name both the source (``Market1501``) and this target."""

    dataset_dir = "synthetic-shifted"
    layout = (
        "  <DATASETS.ROOT>/synthetic-shifted/   (omnireid data synth --domain shifted --out <that folder>)\n"
        "    bounding_box_train/ ...\n"
        "    bounding_box_test/ ...\n"
        "    query/ ..."
    )


def pseudo_label_items(items: Sequence[Item], labels: Sequence[int] | np.ndarray) -> list[Item]:
    """Target training items labelled by their cluster: outliers (label < 0) dropped, clusters renumbered
    ``0..C-1`` in order of first appearance; whatever label the items had (``targets``) is not kept, the
    camera (``camids``) is, when there."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(items),):
        raise ValueError(f"{len(labels)} cluster labels for {len(items)} items")
    new_id: dict[int, int] = {}
    out = []
    for item, label in zip(items, labels.tolist()):
        if label < 0:
            continue
        target = new_id.setdefault(label, len(new_id))
        relabelled = {"img_path": item["img_path"], "targets": target}
        if "camids" in item:
            relabelled["camids"] = int(item["camids"])
        out.append(relabelled)
    return out


def write_pseudo_labels(path: str, items: Sequence[Item]) -> str:
    """``items`` (from :func:`pseudo_label_items`) as the CSV :class:`PseudoLabels` reads (atomically)."""
    rows = [",".join(PSEUDO_LABEL_COLUMNS)]
    for item in items:
        if "," in item["img_path"] or "\n" in item["img_path"]:
            raise DatasetLayoutError(f"image path {item['img_path']!r} cannot be written to a CSV list")
        rows.append(f"{item['img_path']},{item['targets']},{item.get('camids', -1)}")
    atomic_write_text(path, "\n".join(rows) + "\n")
    return path


@DATASET_REGISTRY.register()
class PseudoLabels(ImageSetDataset):
    """The target training images with cluster labels of one adaptation round (``ADAPT.PSEUDO_LABELS``,
    a CSV ``img_path,pseudo_label,camid`` written by ``omnireid adapt``; camid -1: unknown camera)."""

    fields = ("targets", "camids")
    layout = "  a CSV file with the header 'img_path,pseudo_label,camid' (camid -1 when unknown)"

    def __init__(self, path: str) -> None:
        items = []
        with open(self.require(path), newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or tuple(header) != PSEUDO_LABEL_COLUMNS:
                raise DatasetLayoutError(f"PseudoLabels: {path}: expected the header "
                                         f"{','.join(PSEUDO_LABEL_COLUMNS)}, got {header}")
            for number, row in enumerate(reader, 2):
                try:
                    img_path, label, camid = row[0], int(row[1]), int(row[2])
                except (IndexError, ValueError):
                    raise self.bad_line(path, number, ",".join(row), "img_path,pseudo_label,camid") from None
                item = {"img_path": img_path, "targets": label}
                if camid >= 0:
                    item["camids"] = camid
                items.append(item)
        super().__init__(items)

    @classmethod
    def from_config(cls, cfg) -> "PseudoLabels":
        if not cfg.ADAPT.PSEUDO_LABELS:
            raise DatasetLayoutError("PseudoLabels: ADAPT.PSEUDO_LABELS is empty (omnireid adapt sets it each round)")
        return cls(os.path.expanduser(cfg.ADAPT.PSEUDO_LABELS))
