"""Data: dataset registry, transforms, samplers and loaders producing batch dicts (docs/design.md)."""
from __future__ import annotations

from .build import (EmptyDatasetError, TrainData, build_test_loader, build_test_sets, build_train_loader,
                    combine_train_sets)
from .common import Collate, CorruptImageError, ImageDataset, read_image
from .datasets import (DATASET_REGISTRY, DatasetLayoutError, ImageSetDataset, ReidDataset, TestSet, build_dataset,
                       reid_item)
from .samplers import SAMPLER_REGISTRY, InferenceSampler, SamplerError
from .transforms import RandomPatch, build_transforms

__all__ = [
    "DATASET_REGISTRY", "SAMPLER_REGISTRY", "Collate", "CorruptImageError", "DatasetLayoutError", "EmptyDatasetError",
    "ImageDataset", "ImageSetDataset", "InferenceSampler", "RandomPatch", "ReidDataset", "SamplerError", "TestSet",
    "TrainData", "build_dataset", "build_test_loader", "build_test_sets", "build_train_loader", "build_transforms",
    "combine_train_sets", "read_image", "reid_item",
]
