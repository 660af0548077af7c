"""Training samplers (endless, rank-sliced, reproducible) and the inference sampler.

Contract (docs/design.md): a training sampler yields an endless stream of dataset indices for this
rank, deterministic given ``(seed, rank, world_size)``. Every rank computes the same *global* stream
(epoch ``e`` is drawn from ``numpy.random.default_rng([seed, e])``), cuts it in global batches of
``global_batch`` indices and keeps its contiguous slice of each. So N processes see exactly what one
process sees with the same total batch, and with P x K sampling (K divides the per-rank batch) an
identity's K images stay on one rank. ``start_index`` skips the first indices of this rank's stream,
to resume mid-epoch without replaying.

Samplers read labels through the dataset's methods, never item positions: ``len(dataset)``,
``dataset.group_labels()`` (the P x K grouping label, identities or classes) and, for camera-balanced
sampling, ``dataset.camera_labels()`` (see :class:`~omnireid.data.common.ImageDataset`).
"""
from __future__ import annotations

import abc
import math
from collections import defaultdict
from typing import Iterator, Protocol

import numpy as np
from torch.utils.data import Sampler

from omnireid.utils.errors import UserError
from omnireid.utils.registry import Registry

SAMPLER_REGISTRY = Registry("sampler")



class LabelledData(Protocol):
    """What a training sampler needs from a dataset."""

    def __len__(self) -> int: ...

    def group_labels(self) -> np.ndarray: ...

    def camera_labels(self) -> np.ndarray: ...


class SamplerError(UserError, ValueError):
    """The data cannot be sampled as configured (too few identities, batch not divisible by K...)."""


class TrainSampler(Sampler[int], abc.ABC):
    """Base class: subclasses define one epoch of the global stream in :meth:`epoch_indices`."""

    def __init__(self, data: LabelledData, global_batch: int, num_instance: int = 1, seed: int = 0,
                 rank: int = 0, world_size: int = 1, start_index: int = 0) -> None:
        if len(data) == 0:
            raise SamplerError(f"{type(self).__name__}: the training set is empty")
        if world_size < 1 or not 0 <= rank < world_size:
            raise SamplerError(f"rank {rank} is not in a world of size {world_size}")
        if global_batch < 1 or global_batch % world_size:
            raise SamplerError(f"SOLVER.IMS_PER_BATCH ({global_batch}) must be a positive multiple of the "
                               f"number of processes ({world_size})")
        if start_index < 0:
            raise SamplerError(f"start_index must be >= 0, got {start_index}")
        self.data = data
        self.size = len(data)
        self.global_batch = global_batch
        self.num_instance = num_instance
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.per_rank_batch = global_batch // world_size
        self.start_index = start_index
        self._check()

    def _check(self) -> None:
        """Subclasses validate the configuration here (raise :class:`SamplerError`)."""

    @abc.abstractmethod
    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The global stream of epoch ``epoch``, drawn from ``default_rng([seed, epoch])``."""

    def global_stream(self) -> Iterator[int]:
        """The endless global stream: epoch 0, epoch 1, ..."""
        epoch = 0
        while True:
            indices = self.epoch_indices(epoch)
            if len(indices) == 0:
                raise SamplerError(f"{type(self).__name__}: an epoch produced no indices")
            yield from (int(i) for i in indices)
            epoch += 1

    def iter_with_positions(self) -> Iterator[tuple[int, int]]:
        """``(dataset index, position in the global stream)`` for this rank, after ``start_index``."""
        b, lo = self.per_rank_batch, self.rank * self.per_rank_batch
        skip = self.start_index
        position = 0
        batch: list[int] = []
        for index in self.global_stream():
            batch.append(index)
            if len(batch) < self.global_batch:
                continue
            batch_start = position
            position += self.global_batch
            mine = batch[lo:lo + b]
            batch = []
            if skip >= b:  # skip whole per-rank batches without yielding
                skip -= b
                continue
            for offset in range(skip, b):
                yield mine[offset], batch_start + lo + offset
            skip = 0

    def __iter__(self) -> Iterator[int]:
        for index, _ in self.iter_with_positions():
            yield index

    def __len__(self) -> int:  # endless; DataLoader needs no length from an iterable-style sampler
        raise TypeError(f"{type(self).__name__} is endless")


@SAMPLER_REGISTRY.register()
class TrainingSampler(TrainSampler):
    """Plain shuffling: every epoch is a fresh permutation of the whole training set."""

    def epoch_indices(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)


class _IdentitySampler(TrainSampler):
    """Shared checks of P x K samplers: K = ``num_instance``, P = per-batch identities."""

    def _check(self) -> None:
        k = self.num_instance
        name = type(self).__name__
        if k < 1:
            raise SamplerError(f"{name}: DATALOADER.NUM_INSTANCE must be >= 1, got {k}")
        if self.global_batch % k:
            raise SamplerError(f"{name}: SOLVER.IMS_PER_BATCH ({self.global_batch}) must be divisible by "
                               f"DATALOADER.NUM_INSTANCE ({k})")
        if self.per_rank_batch % k:
            raise SamplerError(f"{name}: the per-process batch ({self.global_batch} / {self.world_size} processes "
                               f"= {self.per_rank_batch}) must be divisible by DATALOADER.NUM_INSTANCE ({k}), "
                               "or an identity's images would be split across processes")
        self.num_identities_per_batch = self.global_batch // k
        self.labels = np.asarray(self.data.group_labels(), dtype=np.int64)
        self.index_of_label: dict[int, np.ndarray] = {
            int(label): np.flatnonzero(self.labels == label) for label in np.unique(self.labels)}
        if len(self.index_of_label) < self.num_identities_per_batch:
            raise SamplerError(
                f"{name}: the training set has {len(self.index_of_label)} identities, fewer than the "
                f"{self.num_identities_per_batch} a batch needs (SOLVER.IMS_PER_BATCH {self.global_batch} / "
                f"DATALOADER.NUM_INSTANCE {k}); lower the batch size or use more identities")


@SAMPLER_REGISTRY.register()
class NaiveIdentitySampler(_IdentitySampler):
    """P x K: each batch holds P identities with K images each.

    An epoch: every identity's images are shuffled and cut into chunks of K (an identity with fewer
    than K images is drawn with replacement up to K; a last incomplete chunk is dropped). Batches take
    P random identities among those with chunks left, one chunk each, until fewer than P remain.
    """

    def epoch_indices(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        k, p = self.num_instance, self.num_identities_per_batch
        chunks: dict[int, list[np.ndarray]] = {}
        for label, indices in self.index_of_label.items():
            pool = rng.choice(indices, size=k, replace=True) if len(indices) < k else rng.permutation(indices)
            chunks[label] = [pool[i:i + k] for i in range(0, len(pool) - k + 1, k)]
        out: list[np.ndarray] = []
        available = sorted(chunks)
        while len(available) >= p:
            chosen = rng.choice(len(available), size=p, replace=False)
            for position in chosen:
                out.append(chunks[available[position]].pop())
            available = [label for label in available if chunks[label]]
        return np.concatenate(out)


@SAMPLER_REGISTRY.register()
class BalancedIdentitySampler(_IdentitySampler):
    """Camera-balanced P x K: each identity's K images are spread over its cameras.

    An epoch visits every identity once in random order (P per batch, a last incomplete group dropped).
    The K images of an identity are taken round-robin over its cameras in random order, each camera's
    images shuffled, so K images cover min(K, number of its cameras) cameras; an identity with fewer
    than K images repeats them (reshuffled) to reach K.
    """

    def _check(self) -> None:
        super()._check()
        self.camids = np.asarray(self.data.camera_labels(), dtype=np.int64)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        k, p = self.num_instance, self.num_identities_per_batch
        labels = rng.permutation(sorted(self.index_of_label))
        usable = len(labels) // p * p
        out = [self._balanced_pick(rng, self.index_of_label[int(label)], k) for label in labels[:usable]]
        return np.concatenate(out)

    def _balanced_pick(self, rng: np.random.Generator, indices: np.ndarray, k: int) -> np.ndarray:
        by_camera: dict[int, list[int]] = defaultdict(list)
        for index in indices:
            by_camera[int(self.camids[index])].append(int(index))
        cameras = [rng.permutation(by_camera[c]).tolist() for c in rng.permutation(sorted(by_camera))]
        picked: list[int] = []
        while len(picked) < k:
            queues = [list(q) for q in cameras]
            while len(picked) < k and any(queues):
                for queue in queues:
                    if queue and len(picked) < k:
                        picked.append(queue.pop(0))
            cameras = [rng.permutation(q).tolist() for q in cameras]  # repeats are reshuffled
        return np.asarray(picked, dtype=np.int64)


class InferenceSampler(Sampler[int]):
    """Contiguous shards for inference: rank r gets ``[r*ceil(n/w), min(n, (r+1)*ceil(n/w)))``.

    No padding duplicates, so gathered features are exactly the dataset in order.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise SamplerError(f"rank {rank} is not in a world of size {world_size}")
        shard = math.ceil(size / world_size) if size else 0
        self.begin = min(size, rank * shard)
        self.end = min(size, (rank + 1) * shard)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.end - self.begin
