"""The data of domain adaptation: the shifted synthetic target, and the pseudo-labelled target training
list each adaptation round trains on (read by the registered ``CustomCSV`` dataset, so the normal
trainer and loader read it as any custom data)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from omnireid.data.datasets import DATASET_REGISTRY, DatasetLayoutError, Item
from omnireid.data.datasets.custom_csv import HEADER as CSV_HEADER
from omnireid.data.datasets.market1501 import Market1501
from omnireid.utils.file_io import atomic_write_text


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
    camera (``camids``) is (camera 0 for items without one)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(items),):
        raise ValueError(f"{len(labels)} cluster labels for {len(items)} items")
    new_id: dict[int, int] = {}
    out = []
    for item, label in zip(items, labels.tolist()):
        if label < 0:
            continue
        target = new_id.setdefault(label, len(new_id))
        out.append({"img_path": item["img_path"], "targets": target, "camids": int(item.get("camids", 0))})
    return out


def write_pseudo_labels(path: str, items: Sequence[Item]) -> str:
    """``items`` (from :func:`pseudo_label_items`) as a ``path,pid,camid`` list (atomically): the
    training list of the registered ``CustomCSV`` dataset (``DATASETS.CSV.TRAIN``) a round trains on."""
    rows = [",".join(CSV_HEADER)]
    for item in items:
        if any(c in item["img_path"] for c in ',"\n') or item["img_path"] != item["img_path"].strip():
            raise DatasetLayoutError(f"image path {item['img_path']!r} cannot be written to a CSV list")
        rows.append(f"{item['img_path']},{item['targets']},{item['camids']}")
    atomic_write_text(path, "\n".join(rows) + "\n")
    return path
