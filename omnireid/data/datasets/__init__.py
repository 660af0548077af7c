"""Dataset classes, registered by name in ``DATASET_REGISTRY`` (``DATASETS.NAMES`` / ``DATASETS.TESTS``).

Add a dataset: subclass :class:`~omnireid.data.datasets.bases.ReidDataset` in a new module, decorate
it with ``@DATASET_REGISTRY.register()`` and import the module below.
"""
from __future__ import annotations

from omnireid.utils.registry import Registry

DATASET_REGISTRY = Registry("dataset")

from .bases import DATASETS_ENV, DatasetLayoutError, Item, ReidDataset, datasets_root  # noqa: E402
from . import custom_csv, cuhk03, market1501, msmt17, vehicleid, veri, veriwild  # noqa: E402,F401


def build_dataset(cfg, name: str) -> ReidDataset:
    """The dataset registered as ``name``, built from ``cfg``."""
    return DATASET_REGISTRY.get(name).from_config(cfg)


__all__ = ["DATASET_REGISTRY", "DATASETS_ENV", "DatasetLayoutError", "Item", "ReidDataset", "build_dataset",
           "datasets_root"]
