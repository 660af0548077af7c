"""Sampler properties: P x K structure, rank slicing, reproducibility, resume, clear errors."""
from __future__ import annotations

import itertools
from collections import Counter

import pytest

from omnireid.data.common import ImageDataset
from omnireid.data.samplers import (SAMPLER_REGISTRY, BalancedIdentitySampler, InferenceSampler,
                                    NaiveIdentitySampler, SamplerError, TrainingSampler)


def _items(images_per_id: list[int], cams_per_id: int = 3):
    """Identity i has images_per_id[i] images, cycling over cams_per_id cameras (samplers see the
    dataset's group_labels() / camera_labels(), never the items)."""
    items = []
    for label, count in enumerate(images_per_id):
        for k in range(count):
            items.append({"img_path": f"{label}_{k}.jpg", "targets": label, "camids": k % cams_per_id})
    return ImageDataset(items, transform=None)


ITEMS = _items([6, 5, 4, 2, 9, 4, 3, 7, 4, 1])


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def _batches(sampler, num_batches):
    b = sampler.per_rank_batch
    flat = _take(sampler, b * num_batches)
    return [flat[i * b:(i + 1) * b] for i in range(num_batches)]


def test_registered_names():
    for name in ("TrainingSampler", "NaiveIdentitySampler", "BalancedIdentitySampler"):
        assert name in SAMPLER_REGISTRY


@pytest.mark.parametrize("cls", [NaiveIdentitySampler, BalancedIdentitySampler])
def test_pk_structure(cls):
    k = 4
    sampler = cls(ITEMS, global_batch=16, num_instance=k, seed=3)
    labels = ITEMS.group_labels().tolist()
    for batch in _batches(sampler, 30):
        groups = [batch[i:i + k] for i in range(0, len(batch), k)]
        group_labels = [{labels[i] for i in g} for g in groups]
        assert all(len(g) == 1 for g in group_labels)  # K consecutive images of one identity
        assert len({next(iter(g)) for g in group_labels}) == 4  # P = 4 distinct identities


def test_naive_small_identities_drawn_with_replacement_and_epoch_uses_each_image_once():
    sampler = NaiveIdentitySampler(ITEMS, global_batch=8, num_instance=4, seed=0)
    labels = ITEMS.group_labels().tolist()
    small = {label for label, count in Counter(labels).items() if count < 4}
    assert small == {3, 6, 9}
    for epoch in range(5):
        indices = sampler.epoch_indices(epoch)
        counts = Counter(int(i) for i in indices)
        for index, count in counts.items():
            if labels[index] not in small:
                assert count == 1  # identities with >= K images: no image twice in an epoch
        assert len(indices) % 8 == 0
    seen_small = Counter(labels[i] for i in itertools.chain.from_iterable(
        sampler.epoch_indices(e) for e in range(20)) if labels[i] in small)
    assert seen_small[9] > 0 and seen_small[9] % 4 == 0  # the 1-image identity appears K times


def test_balanced_spreads_over_cameras():
    items = _items([8, 8, 8, 8, 3], cams_per_id=4)
    sampler = BalancedIdentitySampler(items, global_batch=8, num_instance=4, seed=1)
    for batch in _batches(sampler, 20):
        for g in range(0, 8, 4):
            group = batch[g:g + 4]
            labels, cameras = items.group_labels(), items.camera_labels()
            cams = {cameras[i] for i in group}
            num_cams = len({c for label, c in zip(labels, cameras) if label == labels[group[0]]})
            assert len(cams) == min(4, num_cams)
    epoch = sampler.epoch_indices(0)
    assert len(epoch) == 4 * 4  # 5 identities, P = 2: two full groups of P per epoch, the fifth dropped


def test_training_sampler_epochs_are_permutations():
    sampler = TrainingSampler(ITEMS, global_batch=10, seed=5)
    flat = _take(sampler, 3 * len(ITEMS))
    for e in range(3):
        assert sorted(flat[e * len(ITEMS):(e + 1) * len(ITEMS)]) == list(range(len(ITEMS)))


@pytest.mark.parametrize("cls,world", [(NaiveIdentitySampler, 2), (BalancedIdentitySampler, 2),
                                       (NaiveIdentitySampler, 4), (TrainingSampler, 2)])
def test_rank_slices_reassemble_the_single_process_batch(cls, world):
    single = cls(ITEMS, global_batch=16, num_instance=4, seed=11)
    ranks = [cls(ITEMS, global_batch=16, num_instance=4, seed=11, rank=r, world_size=world) for r in range(world)]
    single_batches = _batches(single, 25)
    rank_batches = [_batches(s, 25) for s in ranks]
    labels = ITEMS.group_labels().tolist()
    for i, expected in enumerate(single_batches):
        assert sum((rb[i] for rb in rank_batches), []) == expected
        if cls is not TrainingSampler:  # an identity never split across ranks
            per_rank = [{labels[j] for j in rb[i]} for rb in rank_batches]
            for a, b in itertools.combinations(per_rank, 2):
                assert not a & b


@pytest.mark.parametrize("cls", [TrainingSampler, NaiveIdentitySampler, BalancedIdentitySampler])
def test_reproducible_per_seed(cls):
    a = _take(cls(ITEMS, global_batch=8, num_instance=4, seed=7), 200)
    b = _take(cls(ITEMS, global_batch=8, num_instance=4, seed=7), 200)
    c = _take(cls(ITEMS, global_batch=8, num_instance=4, seed=8), 200)
    assert a == b and a != c


@pytest.mark.parametrize("cls,world,rank", [(NaiveIdentitySampler, 1, 0), (NaiveIdentitySampler, 2, 1),
                                            (TrainingSampler, 2, 0), (BalancedIdentitySampler, 1, 0)])
@pytest.mark.parametrize("start", [0, 3, 8, 37])
def test_start_index_resumes_the_stream(cls, world, rank, start):
    full = _take(cls(ITEMS, global_batch=8, num_instance=4, seed=2, rank=rank, world_size=world), 150)
    resumed = _take(cls(ITEMS, global_batch=8, num_instance=4, seed=2, rank=rank, world_size=world,
                        start_index=start), 150 - start)
    assert resumed == full[start:]


def test_positions_are_global_stream_positions():
    single = list(itertools.islice(NaiveIdentitySampler(ITEMS, 16, 4, seed=1).iter_with_positions(), 64))
    assert [p for _, p in single] == list(range(64))
    rank1 = list(itertools.islice(NaiveIdentitySampler(ITEMS, 16, 4, seed=1, rank=1, world_size=2)
                                  .iter_with_positions(), 16))
    assert rank1 == [single[i] for i in list(range(8, 16)) + list(range(24, 32))]


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(SamplerError, match="identities, fewer than the 16"):
        NaiveIdentitySampler(ITEMS, global_batch=64, num_instance=4)


def test_batch_not_divisible_by_k():
    with pytest.raises(SamplerError, match="divisible by DATALOADER.NUM_INSTANCE"):
        NaiveIdentitySampler(ITEMS, global_batch=18, num_instance=4)


def test_per_rank_batch_not_divisible_by_k():
    with pytest.raises(SamplerError, match="per-process batch"):
        BalancedIdentitySampler(ITEMS, global_batch=24, num_instance=4, rank=0, world_size=4)


def test_batch_not_divisible_by_world_and_empty_set():
    with pytest.raises(SamplerError, match="multiple of the number of processes"):
        TrainingSampler(ITEMS, global_batch=9, rank=0, world_size=2)
    with pytest.raises(SamplerError, match="empty"):
        TrainingSampler(ImageDataset([], transform=None), global_batch=8)


@pytest.mark.parametrize("n,world", [(10, 3), (2, 4), (0, 2), (9, 1), (17, 4)])
def test_inference_sampler_shards(n, world):
    shard = -(-n // world)
    shards = [list(InferenceSampler(n, r, world)) for r in range(world)]
    for r, indices in enumerate(shards):
        assert indices == list(range(min(n, r * shard), min(n, (r + 1) * shard)))
        assert len(InferenceSampler(n, r, world)) == len(indices)
    assert sum(shards, []) == list(range(n))
