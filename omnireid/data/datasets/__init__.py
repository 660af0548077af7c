"""Dataset classes, registered by name in ``DATASET_REGISTRY`` (``DATASETS.NAMES`` / ``DATASETS.TESTS``).

Add a dataset: subclass :class:`~omnireid.data.datasets.bases.ImageSetDataset` (or ``ReidDataset``)
in any module that is imported (a built-in module listed below, a task package, a plugin) and
decorate it with ``@DATASET_REGISTRY.register()``.
"""
from __future__ import annotations

from omnireid.utils.registry import Registry

DATASET_REGISTRY = Registry("dataset")

from .bases import (DATASETS_ENV, DatasetLayoutError, ImageSetDataset, Item, ReidDataset, TestSet,  # noqa: E402
                    datasets_root, reid_item)
from . import custom_csv, cuhk03, market1501, msmt17, naic, vehicleid, veri, veriwild  # noqa: E402,F401


def build_dataset(cfg, name: str) -> ImageSetDataset:
    """The dataset registered as ``name``, built from ``cfg``."""
    return DATASET_REGISTRY.get(name).from_config(cfg)


__all__ = ["DATASET_REGISTRY", "DATASETS_ENV", "DatasetLayoutError", "ImageSetDataset", "Item", "ReidDataset",
           "TestSet", "build_dataset", "datasets_root", "reid_item"]
