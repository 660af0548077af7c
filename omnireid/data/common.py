"""The torch ``Dataset`` over ``(img_path, pid, camid)`` items and the batch collation."""
from __future__ import annotations

import logging
import random
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

# What a decode can raise for a missing, truncated or non-image file.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class CorruptImageError(RuntimeError):
    """An image cannot be read; the message names the file."""


def read_image(path: str) -> Image.Image:
    """Decode ``path`` as RGB, or raise :class:`CorruptImageError` naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except DECODE_ERRORS as exc:
        raise CorruptImageError(
            f"cannot read image {path}: {exc}. Fix or remove the file, or set DATASETS.SKIP_CORRUPT True "
            "to skip unreadable images") from exc


def is_readable(path: str) -> bool:
    try:
        read_image(path)
    except CorruptImageError:
        return False
    return True


class ImageDataset(Dataset):
    """Decodes, transforms and labels one item; an index may carry its own augmentation seed.

    ``dataset[i]`` uses the process's random state; ``dataset[(i, seed)]`` runs the transform under
    ``torch.manual_seed(seed)`` inside a forked RNG, so a sample's augmentation depends only on its
    position in the sampler's stream (identical across worker counts, process counts and resumes).
    With ``skip_corrupt`` an unreadable training image is replaced by another image of the same
    identity (chosen from the seed); without it, it is a :class:`CorruptImageError`.
    """

    def __init__(self, items: Sequence[tuple[str, int, int]], transform: Callable | None,
                 skip_corrupt: bool = False) -> None:
        self.items = list(items)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.skipped = 0
        self._same_label: dict[int, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _alternatives(self, index: int, seed: int) -> list[int]:
        if self._same_label is None:
            same: dict[int, list[int]] = {}
            for i, (_, label, _) in enumerate(self.items):
                same.setdefault(int(label), []).append(i)
            self._same_label = same
        others = [i for i in self._same_label[int(self.items[index][1])] if i != index]
        order = np.random.default_rng(seed).permutation(len(others))
        return [others[i] for i in order]

    def _load(self, index: int, seed: int) -> tuple[Image.Image, int]:
        try:
            return read_image(self.items[index][0]), index
        except CorruptImageError as exc:
            if not self.skip_corrupt:
                raise
            first_error = exc
        for other in self._alternatives(index, seed):
            self.skipped += 1
            logger.warning("skipping unreadable image %s (%d skipped by this loader process so far)",
                           self.items[index][0], self.skipped)
            try:
                return read_image(self.items[other][0]), other
            except CorruptImageError:
                index = other
        raise CorruptImageError(f"every image of identity {self.items[index][1]} is unreadable; "
                                f"first failure: {first_error}")

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = (key, None) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))
        img, used = self._load(int(index), seed if seed is not None else int(index))
        if self.transform is not None:
            if seed is None:
                img = self.transform(img)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    img = self.transform(img)
        path, label, camid = self.items[used]
        return {"images": torch.as_tensor(img), "targets": int(label), "camids": int(camid),
                "img_paths": path, "indices": int(index), "seed": -1 if seed is None else seed}


class Collate:
    """Stack samples into a batch dict; apply the batch transform (random patch) when given.

    The batch transform draws from a generator seeded by the samples' seeds, so it is reproducible.
    """

    def __init__(self, batch_transform: Callable | None = None, with_indices: bool = False) -> None:
        self.batch_transform = batch_transform
        self.with_indices = with_indices

    def __call__(self, samples: list[dict]) -> dict:
        images = torch.stack([s["images"].as_subclass(torch.Tensor) for s in samples])
        if self.batch_transform is not None:
            generator = torch.Generator().manual_seed(sum(s["seed"] for s in samples) % (2**63))
            images = self.batch_transform(images, generator)
        batch = {
            "images": images,
            "targets": torch.tensor([s["targets"] for s in samples], dtype=torch.int64),
            "camids": torch.tensor([s["camids"] for s in samples], dtype=torch.int64),
            "img_paths": [s["img_paths"] for s in samples],
        }
        if self.with_indices:
            batch["indices"] = torch.tensor([s["indices"] for s in samples], dtype=torch.int64)
        return batch


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and numpy in a loader worker from torch's per-worker seed (reproducible)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
