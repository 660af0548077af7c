"""Training and test loaders from a config: datasets -> items -> sampler -> DataLoader of batch dicts."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from omnireid.utils import comm

from .common import Collate, ImageDataset, is_readable, seed_worker
from .datasets import ReidDataset, build_dataset
from .samplers import SAMPLER_REGISTRY, InferenceSampler, SamplerError, TrainSampler
from .transforms import build_batch_transform, build_transforms

logger = logging.getLogger(__name__)


class EmptyDatasetError(ValueError):
    """A split the run needs has no images; the message names the dataset and split."""


@dataclass
class TrainData:
    """Everything the trainer needs from the training data.

    ``items`` are ``(img_path, label, camid)`` with contiguous labels ``0..num_classes-1`` and cameras
    ``0..num_cameras-1`` over the union of the training sets; ``label_names[label]`` is the original
    identity (``"12"``, or ``"Market1501_12"`` / ``"Market1501_test_12"`` when several sets or
    ``DATASETS.COMBINEALL`` are used). Resume at iteration ``i`` with ``start_index = i * ims_per_rank``.
    """

    loader: DataLoader
    num_classes: int
    num_cameras: int
    items: list[tuple[str, int, int]]
    datasets: list[ReidDataset]
    label_names: list[str]
    iters_per_epoch: int
    ims_per_rank: int
    sampler: TrainSampler
    seed: int = 0
    camera_names: list[str] = field(default_factory=list)


def resolve_seed(cfg) -> int:
    """``SEED`` when non-negative, else a random seed shared by all ranks (logged)."""
    if cfg.SEED >= 0:
        return int(cfg.SEED)
    seed = comm.shared_random_seed()
    logger.info("SEED is negative: using random seed %d", seed)
    return seed


def combine_train_sets(datasets: list[ReidDataset], combine_all: bool) -> tuple[list[tuple[str, int, int]], list[str], list[str]]:
    """Relabel the union of training sets: ``(items, label_names, camera_names)``.

    Identities are namespaced by dataset (and by split under COMBINEALL: test people are not training
    people even when their numbers coincide); cameras are namespaced by dataset only (a test image and
    a training image of camera 3 come from the same camera). Labels follow the sorted namespaced keys.
    """
    names = [d.name for d in datasets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"DATASETS.NAMES lists {duplicates} more than once")
    several = len(datasets) > 1
    raw: list[tuple[str, tuple, tuple]] = []
    for dataset in datasets:
        entries = dataset.combined_train() if combine_all else [(p, pid, cam, "train") for p, pid, cam in dataset.train]
        for path, pid, cam, split in entries:
            raw.append((path, (dataset.name, split, pid), (dataset.name, cam)))
    pid_keys = sorted({key for _, key, _ in raw})
    cam_keys = sorted({key for _, _, key in raw})
    label_of = {key: i for i, key in enumerate(pid_keys)}
    camera_of = {key: i for i, key in enumerate(cam_keys)}
    items = [(path, label_of[pk], camera_of[ck]) for path, pk, ck in raw]

    def pid_name(key: tuple) -> str:
        name, split, pid = key
        parts = ([name] if several else []) + (["test"] if split == "test" else []) + [str(pid)]
        return "_".join(parts)

    camera_names = [f"{n}_{c}" if several else str(c) for n, c in cam_keys]
    return items, [pid_name(k) for k in pid_keys], camera_names


def _loader_kwargs(cfg, seed: int) -> dict:
    workers = int(cfg.DATALOADER.NUM_WORKERS)
    if workers < 0:
        raise ValueError(f"DATALOADER.NUM_WORKERS must be >= 0, got {workers}")
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
        raise ValueError("DATASETS.NAMES is empty: name at least one training dataset")
    datasets = [build_dataset(cfg, name) for name in cfg.DATASETS.NAMES]
    for dataset in datasets:
        logger.info("%s", dataset.summary())
    items, label_names, camera_names = combine_train_sets(datasets, cfg.DATASETS.COMBINEALL)
    if not items:
        raise EmptyDatasetError(f"the training set of {list(cfg.DATASETS.NAMES)} is empty (no images found)")
    seed = resolve_seed(cfg)
    world, rank = comm.get_world_size(), comm.get_rank()
    global_batch = int(cfg.SOLVER.IMS_PER_BATCH)
    sampler_cls = SAMPLER_REGISTRY.get(cfg.DATALOADER.SAMPLER_TRAIN)
    try:
        sampler = sampler_cls(items, global_batch=global_batch, num_instance=int(cfg.DATALOADER.NUM_INSTANCE),
                              seed=seed, rank=rank, world_size=world, start_index=start_index)
    except SamplerError as exc:
        raise SamplerError(f"{exc} (training data: {list(cfg.DATASETS.NAMES)}, {len(label_names)} identities, "
                           f"{len(items)} images)") from exc
    dataset = ImageDataset(items, build_transforms(cfg, is_train=True), skip_corrupt=cfg.DATASETS.SKIP_CORRUPT)
    loader = DataLoader(dataset, sampler=_SeededStream(sampler, seed), batch_size=sampler.per_rank_batch,
                        drop_last=True, collate_fn=Collate(build_batch_transform(cfg, is_train=True)),
                        **_loader_kwargs(cfg, seed))
    logger.info("training on %d images of %d identities and %d cameras; %d images per batch per process",
                len(items), len(label_names), len(camera_names), sampler.per_rank_batch)
    return TrainData(loader=loader, num_classes=len(label_names), num_cameras=len(camera_names), items=items,
                     datasets=datasets, label_names=label_names, camera_names=camera_names,
                     iters_per_epoch=max(1, len(items) // global_batch), ims_per_rank=sampler.per_rank_batch,
                     sampler=sampler, seed=seed)


def _drop_unreadable(items: list, what: str) -> list:
    kept = [item for item in items if is_readable(item[0])]
    if len(kept) != len(items):
        logger.warning("DATASETS.SKIP_CORRUPT: skipped %d unreadable images of %s", len(items) - len(kept), what)
    return kept


def build_test_loader(cfg, dataset_name: str) -> tuple[DataLoader, int]:
    """The loader over ``query + gallery`` of ``dataset_name`` and the number of queries.

    Batches carry ``indices`` (positions in query + gallery); each rank reads a contiguous shard
    (:class:`InferenceSampler`), ``TEST.IMS_PER_BATCH // world_size`` images per batch.
    """
    dataset = build_dataset(cfg, dataset_name)
    logger.info("%s", dataset.summary())
    query, gallery = dataset.query, dataset.gallery
    if cfg.DATASETS.SKIP_CORRUPT:
        query = _drop_unreadable(query, f"{dataset_name} query")
        gallery = _drop_unreadable(gallery, f"{dataset_name} gallery")
    for split, items in (("query", query), ("gallery", gallery)):
        if not items:
            raise EmptyDatasetError(f"{dataset_name}: the {split} set is empty; evaluation needs queries and a gallery")
    world = comm.get_world_size()
    batch = int(cfg.TEST.IMS_PER_BATCH) // world
    if batch < 1:
        raise ValueError(f"TEST.IMS_PER_BATCH ({cfg.TEST.IMS_PER_BATCH}) is smaller than the number of processes ({world})")
    items = query + gallery
    sampler = InferenceSampler(len(items), comm.get_rank(), world)
    loader = DataLoader(ImageDataset(items, build_transforms(cfg, is_train=False)), sampler=sampler,
                        batch_size=batch, drop_last=False, collate_fn=Collate(with_indices=True),
                        **_loader_kwargs(cfg, max(int(cfg.SEED), 0)))
    return loader, len(query)
