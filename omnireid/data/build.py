"""Training and test loaders from a config: datasets -> items -> sampler -> DataLoader of batch dicts.

Test data: ``DATASETS.TESTS`` names datasets; each gives one or more :class:`TestSet` (items +
protocol + protocol metadata) through :func:`build_test_sets`, and :func:`build_test_loader` reads one.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from omnireid.utils import comm
from omnireid.utils.errors import ConfigError, DatasetError

from .common import Collate, ImageDataset, is_readable, seed_worker
from .datasets import ImageSetDataset, TestSet, build_dataset
from .samplers import SAMPLER_REGISTRY, InferenceSampler, SamplerError, TrainSampler
from .transforms import build_batch_transform, build_transforms

logger = logging.getLogger(__name__)


class EmptyDatasetError(DatasetError):
    """A split the run needs has no images; the message names the dataset and split."""


@dataclass
class TrainData:
    """Everything the trainer needs from the training data.

    ``items`` are item dicts whose ``targets`` are contiguous labels ``0..num_classes-1`` and whose
    ``camids`` (when the data has cameras) are ``0..num_cameras-1``, over the union of the training
    sets; ``label_names[label]`` is the original label (``"12"``, or ``"Market1501_12"`` /
    ``"Market1501_test_12"`` when several sets or ``DATASETS.COMBINEALL`` are used; a dataset that
    names its classes gives those names). ``metadata`` describes the labels for whoever reads the
    model's outputs later (saved as ``metadata.json`` and in checkpoints): ``class_names``
    (= ``label_names``), ``camera_names`` and what the datasets add (``attribute_names``, ...).
    Resume at iteration ``i`` with ``start_index = i * ims_per_rank``.
    """

    loader: DataLoader
    num_classes: int
    num_cameras: int
    items: list[dict]
    datasets: list[ImageSetDataset]
    label_names: list[str]
    iters_per_epoch: int
    ims_per_rank: int
    sampler: TrainSampler
    seed: int = 0
    camera_names: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def resolve_seed(cfg) -> int:
    """``SEED`` when non-negative, else a random seed shared by all ranks (logged)."""
    if cfg.SEED >= 0:
        return int(cfg.SEED)
    seed = comm.shared_random_seed()
    logger.info("SEED is negative: using random seed %d", seed)
    return seed


def _field_presence(entries: list[tuple[ImageSetDataset, dict, str]], key: str) -> bool:
    """Whether the items carry field ``key``: all of them (True), none (False), else an error."""
    have = [key in item for _, item, _ in entries]
    if any(have) and not all(have):
        dataset, item, _ = entries[have.index(False)]
        raise ValueError(f"{dataset.name}: item {item.get('img_path')} has no {key!r} while other training items "
                         "have one; training sets combined in DATASETS.NAMES must carry the same fields")
    return bool(have) and all(have)


def remove_rare_identities(entries: list[tuple[ImageSetDataset, dict, str]], min_images: int
                           ) -> list[tuple[ImageSetDataset, dict, str]]:
    """The entries without the identities (per dataset and split) that have fewer than ``min_images``
    images: a long tail of one-image identities gives a classifier nothing to learn and a P x K
    sampler nothing to pair (FastReID NAIC20's ``RM_LT``, which dropped identities of one image)."""
    if min_images <= 1:
        return entries
    counts = Counter((d.name, split, item["targets"]) for d, item, split in entries)
    kept = [(d, item, split) for d, item, split in entries if counts[(d.name, split, item["targets"])] >= min_images]
    dropped = sum(1 for c in counts.values() if c < min_images)
    if not kept:
        raise DatasetError(f"DATASETS.MIN_IMAGES_PER_ID {min_images} leaves no training identity (the largest has "
                           f"{max(counts.values(), default=0)} images)")
    logger.info("DATASETS.MIN_IMAGES_PER_ID %d: dropped %d of %d identities (%d of %d images)", min_images, dropped,
                len(counts), len(entries) - len(kept), len(entries))
    return kept


def combine_train_sets(datasets: list[ImageSetDataset], combine_all: bool, min_images_per_id: int = 0
                       ) -> tuple[list[dict], list[str], list[str]]:
    """Relabel the union of training sets: ``(items, label_names, camera_names)``.

    ``targets`` are namespaced by dataset (and by split under COMBINEALL: test people are not
    training people even when their numbers coincide); ``camids`` are namespaced by dataset only (a
    test image and a training image of camera 3 come from the same camera). Labels follow the
    sorted namespaced keys. Items are new dicts; other fields are carried over unchanged.
    """
    names = [d.name for d in datasets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"DATASETS.NAMES lists {duplicates} more than once")
    several = len(datasets) > 1
    entries = [(dataset, item, split) for dataset in datasets
               for item, split in (dataset.combined_train() if combine_all else [(i, "train") for i in dataset.train])]
    has_targets, has_cameras = _field_presence(entries, "targets"), _field_presence(entries, "camids")
    if min_images_per_id > 1:
        if not has_targets:
            raise ConfigError(f"DATASETS.MIN_IMAGES_PER_ID {min_images_per_id}: the training items of "
                              f"{names} have no identities (targets) to count")
        entries = remove_rare_identities(entries, min_images_per_id)
    by_name = {d.name: d for d in datasets}
    pid_keys = sorted({(d.name, split, item["targets"]) for d, item, split in entries}) if has_targets else []
    cam_keys = sorted({(d.name, item["camids"]) for d, item, _ in entries}) if has_cameras else []
    label_of = {key: i for i, key in enumerate(pid_keys)}
    camera_of = {key: i for i, key in enumerate(cam_keys)}
    items = []
    for dataset, item, split in entries:
        relabelled = dict(item)
        if has_targets:
            relabelled["targets"] = label_of[(dataset.name, split, item["targets"])]
        if has_cameras:
            relabelled["camids"] = camera_of[(dataset.name, item["camids"])]
        items.append(relabelled)

    def pid_name(key: tuple) -> str:
        name, split, target = key
        parts = ([name] if several else []) + (["test"] if split == "test" else [])
        return "_".join(parts + [by_name[name].label_name(target)])

    camera_names = [f"{n}_{c}" if several else str(c) for n, c in cam_keys]
    return items, [pid_name(k) for k in pid_keys], camera_names


def train_metadata(datasets: list[ImageSetDataset], label_names: list[str], camera_names: list[str]) -> dict[str, Any]:
    """The datasets' own metadata (equal values when several give a key), then ``class_names`` and
    ``camera_names`` in the relabelled order the model is trained with."""
    merged: dict[str, Any] = {}
    for dataset in datasets:
        for key, value in dataset.metadata().items():
            if key in merged and merged[key] != value:
                raise ValueError(f"DATASETS.NAMES: {dataset.name} describes {key!r} differently from another "
                                 "training set; these sets cannot be trained together")
            merged[key] = value
    merged["class_names"] = list(label_names)
    if camera_names:
        merged["camera_names"] = list(camera_names)
    return merged


def loader_workers(requested: int) -> int:
    """``DATALOADER.NUM_WORKERS`` checked, and capped to the CPU cores this process may use (with a note):
    more workers than cores only compete with each other (FastReID's default is 8)."""
    if requested < 0:
        raise ConfigError(f"DATALOADER.NUM_WORKERS must be >= 0 (0: load in the main process), got {requested}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if requested > cores:
        if requested not in _CAPPED_NOTED:
            logger.info("DATALOADER.NUM_WORKERS %d is more than the %d CPU cores available: using %d",
                        requested, cores, cores)
            _CAPPED_NOTED.add(requested)
        return cores
    return requested


_CAPPED_NOTED: set[int] = set()  # log the cap once per value, not for every loader


def _loader_kwargs(cfg, seed: int) -> dict:
    workers = loader_workers(int(cfg.DATALOADER.NUM_WORKERS))
    return dict(num_workers=workers, persistent_workers=workers > 0, worker_init_fn=seed_worker,
                pin_memory=torch.cuda.is_available(),
                generator=torch.Generator().manual_seed(seed + comm.get_rank()))


class _SeededStream(Sampler):
    """Pairs each index of a training sampler with a seed derived from its global stream position."""

    def __init__(self, sampler: TrainSampler, seed: int) -> None:
        self.sampler = sampler
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index, position in self.sampler.iter_with_positions():
            yield index, int(np.random.SeedSequence([self.seed, position]).generate_state(1, np.uint64)[0] >> 1)


def build_train_loader(cfg, start_index: int = 0) -> TrainData:
    """The endless training loader of ``DATASETS.NAMES`` with the ``DATALOADER.SAMPLER_TRAIN`` sampler.

    Each rank gets ``SOLVER.IMS_PER_BATCH // world_size`` images per batch; ``start_index`` skips the
    first indices of this rank's stream (resume).
    """
    if not cfg.DATASETS.NAMES:
        raise ConfigError("DATASETS.NAMES is empty: name at least one training dataset")
    datasets = [build_dataset(cfg, name) for name in cfg.DATASETS.NAMES]
    for dataset in datasets:
        logger.info("%s", dataset.summary())
    items, label_names, camera_names = combine_train_sets(datasets, cfg.DATASETS.COMBINEALL,
                                                          int(cfg.DATASETS.MIN_IMAGES_PER_ID))
    if not items:
        raise EmptyDatasetError(f"the training set of {list(cfg.DATASETS.NAMES)} is empty (no images found)")
    if len(label_names) == 1:
        raise DatasetError(f"the training set of {list(cfg.DATASETS.NAMES)} has a single identity/class "
                           f"({label_names[0]!r}, {len(items)} images): classification and metric losses need at "
                           "least 2 (with one, every loss is 0 and nothing is learned)")
    seed = resolve_seed(cfg)
    world, rank = comm.get_world_size(), comm.get_rank()
    global_batch = int(cfg.SOLVER.IMS_PER_BATCH)
    dataset = ImageDataset(items, build_transforms(cfg, is_train=True), skip_corrupt=cfg.DATASETS.SKIP_CORRUPT)
    sampler_cls = SAMPLER_REGISTRY.get(cfg.DATALOADER.SAMPLER_TRAIN)
    try:
        sampler = sampler_cls(dataset, global_batch=global_batch, num_instance=int(cfg.DATALOADER.NUM_INSTANCE),
                              seed=seed, rank=rank, world_size=world, start_index=start_index)
    except SamplerError as exc:
        raise SamplerError(f"{exc} (training data: {list(cfg.DATASETS.NAMES)}, {len(label_names)} identities, "
                           f"{len(items)} images)") from exc
    loader = DataLoader(dataset, sampler=_SeededStream(sampler, seed), batch_size=sampler.per_rank_batch,
                        drop_last=True, collate_fn=Collate(build_batch_transform(cfg, is_train=True)),
                        **_loader_kwargs(cfg, seed))
    logger.info("training on %d images of %d identities and %d cameras; %d images per batch per process",
                len(items), len(label_names), len(camera_names), sampler.per_rank_batch)
    return TrainData(loader=loader, num_classes=len(label_names), num_cameras=len(camera_names), items=items,
                     datasets=datasets, label_names=label_names, camera_names=camera_names,
                     iters_per_epoch=max(1, len(items) // global_batch), ims_per_rank=sampler.per_rank_batch,
                     sampler=sampler, seed=seed, metadata=train_metadata(datasets, label_names, camera_names))


def check_test_set(test_set: TestSet) -> None:
    """Errors naming the test set when what its metadata describes cannot be evaluated."""
    if not test_set.items:
        raise EmptyDatasetError(f"{test_set.name}: the test set is empty (no images found)")
    if "num_query" in test_set.meta:
        num_query = int(test_set.meta["num_query"])
        for split, empty in (("query", num_query <= 0), ("gallery", num_query >= len(test_set.items))):
            if empty:
                raise EmptyDatasetError(f"{test_set.name}: the {split} set is empty; evaluation needs queries "
                                        "and a gallery")
        check_queries_have_matches(test_set, num_query)


def check_queries_have_matches(test_set: TestSet, num_query: int) -> None:
    """Say how many queries have no true match in the gallery (same identity, another camera): the
    query/gallery protocol leaves them out of every metric. None at all is an error."""
    query, gallery = test_set.items[:num_query], test_set.items[num_query:]
    if not all("targets" in item and "camids" in item for item in test_set.items):
        return
    cameras_of: dict[int, set[int]] = {}
    for item in gallery:
        cameras_of.setdefault(int(item["targets"]), set()).add(int(item["camids"]))
    unmatched = sum(not (cameras_of.get(int(item["targets"]), set()) - {int(item["camids"])}) for item in query)
    if unmatched == len(query):
        raise DatasetError(f"{test_set.name}: none of the {len(query)} queries has a true match in the gallery (an "
                           "image of the same identity from another camera): nothing can be evaluated; check that "
                           "query and gallery come from the same test split")
    if unmatched:
        logger.warning("%s: %d of %d queries have no true match in the gallery (same identity, another camera) "
                       "and are left out of the metrics", test_set.name, unmatched, len(query))


def build_test_sets(cfg, dataset_name: str) -> list[TestSet]:
    """The test sets of dataset ``dataset_name`` (one for reID; several for e.g. face verification),
    checked, without unreadable images under ``DATASETS.SKIP_CORRUPT``."""
    dataset = build_dataset(cfg, dataset_name)
    logger.info("%s", dataset.summary())
    test_sets = dataset.test_sets()
    if not test_sets:
        raise EmptyDatasetError(f"{dataset_name} has no test set (DATASETS.TESTS lists it); check its files")
    checked = []
    for test_set in test_sets:
        if cfg.DATASETS.SKIP_CORRUPT:
            keep = [is_readable(item["img_path"]) for item in test_set.items]
            if not all(keep):
                logger.warning("DATASETS.SKIP_CORRUPT: skipped %d unreadable images of %s", keep.count(False),
                               test_set.name)
                test_set = test_set.subset(keep)
        check_test_set(test_set)
        checked.append(test_set)
    return checked


def build_test_loader(cfg, test_set: TestSet) -> DataLoader:
    """The loader over the items of ``test_set``, in order.

    Batches carry ``indices`` (positions in the test set); each rank reads a contiguous shard
    (:class:`InferenceSampler`), ``TEST.IMS_PER_BATCH // world_size`` images per batch.
    """
    world = comm.get_world_size()
    if int(cfg.TEST.IMS_PER_BATCH) < 1:
        raise ConfigError(f"TEST.IMS_PER_BATCH must be >= 1 (images per evaluation batch), got {cfg.TEST.IMS_PER_BATCH}")
    batch = int(cfg.TEST.IMS_PER_BATCH) // world
    if batch < 1:
        raise ConfigError(f"TEST.IMS_PER_BATCH ({cfg.TEST.IMS_PER_BATCH}) is smaller than the number of processes ({world})")
    sampler = InferenceSampler(len(test_set.items), comm.get_rank(), world)
    return DataLoader(ImageDataset(test_set.items, build_transforms(cfg, is_train=False)), sampler=sampler,
                      batch_size=batch, drop_last=False, collate_fn=Collate(with_indices=True),
                      **_loader_kwargs(cfg, max(int(cfg.SEED), 0)))
