"""The torch ``Dataset`` over item dicts (``{"img_path": ..., <fields>}``) and the batch collation."""
from __future__ import annotations

import io
import logging
import random
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from omnireid.utils.errors import DatasetError

from .containers import read_member, split_member_path
from .decode import to_rgb

logger = logging.getLogger(__name__)

# What a decode can raise for a missing, truncated or non-image file.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class CorruptImageError(DatasetError, RuntimeError):
    """An image cannot be read; the message names the file."""


def read_image(path: str) -> Image.Image:
    """Decode ``path`` to the RGB pixels it shows (:func:`~omnireid.data.decode.to_rgb`), or raise
    :class:`CorruptImageError` naming the file. ``<container>::<member>`` paths are read from a
    container file (:mod:`omnireid.data.containers`)."""
    try:
        source = io.BytesIO(read_member(path)) if split_member_path(path) else path
        with Image.open(source) as img:
            return to_rgb(img)
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

    ``items`` are dicts ``{"img_path": str, <field>: value, ...}``; ``dataset[i]`` is
    ``{"images": uint8 CHW tensor, <every field>, "img_paths", "indices", "seed"}``.
    ``dataset[i]`` uses the process's random state; ``dataset[(i, seed)]`` runs the transform under
    ``torch.manual_seed(seed)`` inside a forked RNG, so a sample's augmentation depends only on its
    position in the sampler's stream (identical across worker counts, process counts and resumes).
    With ``skip_corrupt`` an unreadable training image is replaced by another image of the same
    group (identity or class, :meth:`group_labels`, chosen from the seed); without it, it is a
    :class:`CorruptImageError`.
    """

    def __init__(self, items: Sequence[dict], transform: Callable | None, skip_corrupt: bool = False,
                 group_field: str = "targets", camera_field: str = "camids") -> None:
        self.items = list(items)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.group_field = group_field
        self.camera_field = camera_field
        self.skipped = 0
        self._same_label: dict[int, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _labels(self, key: str, what: str) -> np.ndarray:
        missing = next((i for i, item in enumerate(self.items) if key not in item), None)
        if missing is not None:
            raise KeyError(f"{what} need the field {key!r}, but item {missing} ({self.items[missing].get('img_path')}) "
                           f"has only {sorted(self.items[missing])}")
        return np.asarray([int(item[key]) for item in self.items], dtype=np.int64)

    def group_labels(self) -> np.ndarray:
        """The label P x K samplers group by (``group_field``, default ``targets``), one per item."""
        return self._labels(self.group_field, "identity samplers")

    def camera_labels(self) -> np.ndarray:
        """The camera of every item (``camera_field``, default ``camids``), for camera-aware sampling."""
        return self._labels(self.camera_field, "camera-balanced samplers")

    def _alternatives(self, index: int, seed: int) -> list[int]:
        if self._same_label is None:
            same: dict[int, list[int]] = {}
            for i, label in enumerate(self.group_labels().tolist()):
                same.setdefault(label, []).append(i)
            self._same_label = same
        others = [i for i in self._same_label[int(self.items[index][self.group_field])] if i != index]
        order = np.random.default_rng(seed).permutation(len(others))
        return [others[i] for i in order]

    def _load(self, index: int, seed: int) -> tuple[Image.Image, int]:
        try:
            return read_image(self.items[index]["img_path"]), index
        except CorruptImageError as exc:
            if not self.skip_corrupt:
                raise
            first_error = exc
        for other in self._alternatives(index, seed):
            self.skipped += 1
            logger.warning("skipping unreadable image %s (%d skipped by this loader process so far)",
                           self.items[index]["img_path"], self.skipped)
            try:
                return read_image(self.items[other]["img_path"]), other
            except CorruptImageError:
                index = other
        raise CorruptImageError(f"every image of {self.group_field} {self.items[index][self.group_field]} is "
                                f"unreadable; first failure: {first_error}")

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = (key, None) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))
        img, used = self._load(int(index), seed if seed is not None else int(index))
        if self.transform is not None:
            if seed is None:
                img = self.transform(img)
            else:
                with torch.random.fork_rng(devices=[]):
                    # the CPU generator alone: torch.manual_seed would also queue a CUDA seeding (with a
                    # stack trace each time) in a CUDA build, ~1 ms per sample; transforms run on CPU
                    torch.default_generator.manual_seed(seed)
                    img = self.transform(img)
        item = self.items[used]
        fields = {k: v for k, v in item.items() if k != "img_path"}
        return {"images": torch.as_tensor(img), **fields, "img_paths": item["img_path"], "indices": int(index),
                "seed": -1 if seed is None else seed}


# Sample keys Collate handles itself rather than as label fields.
_NOT_FIELDS = frozenset({"images", "seed", "indices"})


def collate_field(name: str, values: list) -> torch.Tensor | list:
    """One field over a batch: ints -> int64, floats -> float32, bools -> bool, tensors/arrays/lists of
    numbers -> stacked (integer -> int64, float -> float32), strings -> a list."""
    first = values[0]
    if all(isinstance(v, str) for v in values):
        return list(values)
    if all(isinstance(v, torch.Tensor) for v in values):
        return torch.stack(values)
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return torch.tensor([bool(v) for v in values], dtype=torch.bool)
    try:
        array = np.asarray(values)
    except ValueError as exc:  # ragged vectors
        raise ValueError(f"field {name!r} cannot be batched: {exc}") from None
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise TypeError(f"field {name!r} cannot be batched: values like {first!r} ({type(first).__name__}) are not "
                        "numbers, vectors of numbers or strings")
    if array.dtype.kind == "b":
        return torch.from_numpy(array.copy())
    dtype = torch.int64 if array.dtype.kind in "iu" else torch.float32
    return torch.as_tensor(array).to(dtype)


class Collate:
    """Stack samples into a batch dict; apply the batch transform (random patch) when given.

    Every field the samples carry is batched (:func:`collate_field`); ``img_paths`` stays a list.
    ``indices`` (positions in the dataset) are kept when ``with_indices``. The batch transform draws
    from a generator seeded by the samples' seeds, so it is reproducible.
    """

    def __init__(self, batch_transform: Callable | None = None, with_indices: bool = False) -> None:
        self.batch_transform = batch_transform
        self.with_indices = with_indices

    def __call__(self, samples: list[dict]) -> dict:
        images = torch.stack([s["images"].as_subclass(torch.Tensor) for s in samples])
        if self.batch_transform is not None:
            generator = torch.Generator().manual_seed(sum(s["seed"] for s in samples) % (2**63))
            images = self.batch_transform(images, generator)
        batch: dict = {"images": images}
        for name in samples[0]:
            if name in _NOT_FIELDS:
                continue
            missing = [s.get("img_paths", i) for i, s in enumerate(samples) if name not in s]
            if missing:
                raise KeyError(f"field {name!r} is missing from some samples of the batch (e.g. {missing[0]})")
            batch[name] = collate_field(name, [s[name] for s in samples])
        if self.with_indices:
            batch["indices"] = torch.tensor([s["indices"] for s in samples], dtype=torch.int64)
        return batch


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and numpy in a loader worker from torch's per-worker seed (reproducible)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
