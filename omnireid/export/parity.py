"""Proof that an artifact computes the model's outputs: real images in, max |diff| and cosine per output out.

Parity images come from the configured test set (``DATASETS.TESTS[0]``, query then gallery, spread
evenly) or, when it is not on disk, from the built-in synthetic reID generator rendered in memory.
"""
from __future__ import annotations

import io
import logging
import statistics
import time
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from omnireid.data.transforms import inference_transform

logger = logging.getLogger(__name__)


def transform_images(images: Sequence[Image.Image], transform: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """PIL images -> uint8 ``(N, 3, H, W)`` through ``transform``."""
    return torch.stack([transform(image) for image in images])


def load_images(paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """Image files -> uint8 ``(N, 3, H, W)``; an unreadable file is an error naming it."""
    from omnireid.data.common import read_image

    return transform_images([read_image(path) for path in paths], transform)


def synthetic_images(count: int, seed: int = 0) -> list[Image.Image]:
    """``count`` images of the built-in synthetic reID data, rendered in memory (no files)."""
    from omnireid.data.synthetic import plan_synthetic_reid, render_shot

    num_ids = max(2, count // 4 + 1)
    shots, _ = plan_synthetic_reid(seed=seed, num_train_ids=1, num_test_ids=num_ids, num_distractors=0, num_junk=0)
    shots = [s for s in shots if s.folder in ("query", "bounding_box_test")][:count]
    return [Image.open(io.BytesIO(render_shot(shot))).convert("RGB") for shot in shots]


def dataset_images(cfg, count: int = 16, split: str = "test") -> tuple[torch.Tensor, str]:
    """uint8 ``(count, 3, H, W)`` test-transformed images and a description of their source.

    ``split`` "test" takes the test sets' images (reID: query + gallery) of ``DATASETS.TESTS[0]``, "train" the training images of
    ``DATASETS.NAMES[0]``; both fall back to the synthetic data when the dataset is not on disk.
    """
    from omnireid.data.datasets import build_dataset

    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    transform = inference_transform(cfg)
    names = list(cfg.DATASETS.TESTS if split == "test" else cfg.DATASETS.NAMES)
    if names:
        try:
            dataset = build_dataset(cfg, names[0])
        except FileNotFoundError as exc:
            logger.info("%s images: %s is not available (%s); using the built-in synthetic data",
                        split, names[0], str(exc).splitlines()[0])
        else:
            items = ([item for test in dataset.test_sets() for item in test.items] if split == "test"
                     else list(dataset.train))
            if items:
                picks = np.linspace(0, len(items) - 1, num=min(count, len(items))).round().astype(int)
                paths = [items[i]["img_path"] for i in picks]
                return load_images(paths, transform), f"{names[0]} {split} set ({len(paths)} images)"
    images = synthetic_images(count)
    return transform_images(images, transform), f"built-in synthetic reID data ({len(images)} images, seed 0)"


def compare_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """:func:`compare_features` of every named output; the artifact must give exactly the reference's names."""
    if list(reference) != list(candidate):
        raise ValueError(f"output names differ: reference {list(reference)}, exported {list(candidate)}")
    return {name: compare_features(reference[name], candidate[name]) for name in reference}


def parity_passed(metrics: dict[str, float], tolerance: dict[str, float | None]) -> bool:
    """The rule :func:`parity_rule` states, applied to one output's :func:`compare_features`."""
    relative = tolerance.get("relative_max_abs_diff")
    bound = None if relative is None else relative * max(1.0, metrics["reference_max_abs"])
    return bool(metrics["min_cosine"] >= tolerance["min_cosine"] and (bound is None or metrics["max_abs_diff"] <= bound))


def parity_rule(tolerance: dict[str, float | None]) -> str:
    """The pass rule in words, for the report and the log."""
    rule = f"min cosine >= {tolerance['min_cosine']:g}"
    relative = tolerance.get("relative_max_abs_diff")
    if relative is not None:
        rule = f"max |diff| <= {relative:g} * max(1, max |reference|) and " + rule
    return rule + ", for every output"


def compare_features(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Max absolute difference and the minimum per-image cosine similarity (float64)."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"feature shapes differ: reference {reference.shape}, exported {candidate.shape}")
    dot = (reference * candidate).sum(axis=1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = np.where(norms > 0, dot / np.maximum(norms, 1e-300), 1.0)
    return {"max_abs_diff": float(np.abs(reference - candidate).max()),
            "min_cosine": float(cosine.min()),
            "reference_max_abs": float(np.abs(reference).max())}


def measure_latency(fn: Callable[[], object], warmup: int = 1, runs: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)
