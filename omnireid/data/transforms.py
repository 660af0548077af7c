"""Image pipelines from ``INPUT.*`` (torchvision.transforms.v2), train and test from one function.

Output: ``uint8`` tensors ``(3, H, W)`` on the 0-255 scale; normalisation happens inside the model.
Per-image transforms run on the PIL image (fast uint8 paths), random erasing on the uint8 tensor.
Random patch (``INPUT.RPT``) needs other images, so it is a batch transform applied at collation
(:class:`RandomPatch`).
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from omnireid.config.config import ConfigError

INTERPOLATIONS: MappingProxyType[str, InterpolationMode] = MappingProxyType({
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "lanczos": InterpolationMode.LANCZOS,
    "box": InterpolationMode.BOX,
    "hamming": InterpolationMode.HAMMING,
})


def _size(value, key: str) -> list[int]:
    size = [int(v) for v in value]
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise ConfigError(f"{key} must be [height, width] with positive values, got {list(value)}")
    return size


def _interpolation(cfg) -> InterpolationMode:
    name = str(cfg.INPUT.INTERPOLATION).lower()
    if name not in INTERPOLATIONS:
        raise ConfigError(f"INPUT.INTERPOLATION {cfg.INPUT.INTERPOLATION!r} is not one of {sorted(INTERPOLATIONS)}")
    return INTERPOLATIONS[name]


def _maybe(p: float, transform: v2.Transform) -> v2.Transform:
    return transform if p >= 1.0 else v2.RandomApply([transform], p=p)


def build_transforms(cfg, is_train: bool) -> v2.Compose:
    """The per-image pipeline (PIL image -> uint8 tensor) for training or testing.

    Training order (FastReID's): resize, random resized crop, AutoAugment, flip, pad + random crop,
    colour jitter, random affine, AugMix, to tensor, random erasing. Testing: resize (then centre
    crop to ``INPUT.CROP.SIZE`` when cropping is enabled).
    """
    inp = cfg.INPUT
    interpolation = _interpolation(cfg)
    ops: list[v2.Transform] = []
    if not is_train:
        ops.append(v2.Resize(_size(inp.SIZE_TEST, "INPUT.SIZE_TEST"), interpolation=interpolation, antialias=True))
        if inp.CROP.ENABLED:
            ops.append(v2.CenterCrop(_size(inp.CROP.SIZE, "INPUT.CROP.SIZE")))
        ops += [v2.ToImage(), v2.ToDtype(torch.uint8, scale=True)]
        return v2.Compose(ops)

    out_size = _size(inp.SIZE_TRAIN, "INPUT.SIZE_TRAIN")
    ops.append(v2.Resize(out_size, interpolation=interpolation, antialias=True))
    if inp.CROP.ENABLED:
        out_size = _size(inp.CROP.SIZE, "INPUT.CROP.SIZE")
        ops.append(v2.RandomResizedCrop(out_size, scale=tuple(inp.CROP.SCALE), ratio=tuple(inp.CROP.RATIO),
                                        interpolation=interpolation, antialias=True))
    if inp.AUTOAUG.ENABLED:
        ops.append(_maybe(inp.AUTOAUG.PROB, v2.AutoAugment(interpolation=InterpolationMode.BILINEAR)))
    if inp.FLIP.ENABLED:
        ops.append(v2.RandomHorizontalFlip(p=inp.FLIP.PROB))
    if inp.PADDING.ENABLED:
        ops += [v2.Pad(int(inp.PADDING.SIZE), padding_mode=inp.PADDING.MODE), v2.RandomCrop(out_size)]
    if inp.CJ.ENABLED:
        ops.append(_maybe(inp.CJ.PROB, v2.ColorJitter(brightness=inp.CJ.BRIGHTNESS, contrast=inp.CJ.CONTRAST,
                                                        saturation=inp.CJ.SATURATION, hue=inp.CJ.HUE)))
    if inp.AFFINE.ENABLED:
        ops.append(_maybe(inp.AFFINE.PROB, v2.RandomAffine(
            degrees=inp.AFFINE.DEGREES, translate=tuple(inp.AFFINE.TRANSLATE), scale=tuple(inp.AFFINE.SCALE),
            shear=inp.AFFINE.SHEAR, interpolation=InterpolationMode.BILINEAR)))
    if inp.AUGMIX.ENABLED:
        ops.append(_maybe(inp.AUGMIX.PROB, v2.AugMix(interpolation=InterpolationMode.BILINEAR)))
    ops += [v2.ToImage(), v2.ToDtype(torch.uint8, scale=True)]
    if inp.REA.ENABLED:
        value = [int(round(v)) for v in inp.REA.VALUE]
        if len(value) not in (1, 3) or not all(0 <= v <= 255 for v in value):
            raise ConfigError(f"INPUT.REA.VALUE must be 1 or 3 values on the 0-255 scale, got {list(inp.REA.VALUE)}")
        ops.append(v2.RandomErasing(p=inp.REA.PROB, value=value))
    return v2.Compose(ops)


class RandomPatch:
    """Paste a patch cut from another image of the batch (FastReID's RandomPatch, batch-wise).

    With probability ``prob`` per image: a patch of area ``U(min_area, max_area)`` of the image and
    aspect ratio in ``[min_ratio, 1/min_ratio]`` is cut at a random place of a random other image of
    the batch, mirrored with probability ``prob_flip``, and pasted at a random place. Operates on a
    uint8 batch ``(N, 3, H, W)``, returns a new tensor, draws from ``generator`` only.
    """

    def __init__(self, prob: float = 0.5, min_area: float = 0.01, max_area: float = 0.5,
                 min_ratio: float = 0.1, prob_flip: float = 0.5) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"INPUT.RPT.PROB must be within [0, 1], got {prob}")
        self.prob, self.min_area, self.max_area = prob, min_area, max_area
        self.min_ratio, self.prob_flip = min_ratio, prob_flip

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = images.clone()
        n, _, h, w = images.shape

        def uniform(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=generator))

        def randint(hi: int) -> int:
            return int(torch.randint(hi, (), generator=generator))

        for i in range(n):
            if float(torch.rand((), generator=generator)) >= self.prob:
                continue
            for _ in range(100):  # find a patch shape that fits
                area = uniform(self.min_area, self.max_area) * h * w
                ratio = math.exp(uniform(math.log(self.min_ratio), -math.log(self.min_ratio)))
                ph, pw = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
                if 0 < ph < h and 0 < pw < w:
                    break
            else:
                continue
            source = (i + 1 + randint(n - 1)) % n if n > 1 else i
            sy, sx = randint(h - ph + 1), randint(w - pw + 1)
            patch = images[source, :, sy:sy + ph, sx:sx + pw]
            if float(torch.rand((), generator=generator)) < self.prob_flip:
                patch = patch.flip(-1)
            ty, tx = randint(h - ph + 1), randint(w - pw + 1)
            out[i, :, ty:ty + ph, tx:tx + pw] = patch
        return out


def inference_transform(cfg, size: Sequence[int] | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """The data pipeline's test-time transform (PIL -> uint8 CHW), optionally for another input size.

    Artifacts fix their input size; when it differs from ``INPUT.SIZE_TEST`` the resize targets the
    artifact's size (with ``INPUT.CROP`` enabled the crop must already produce that size).
    """
    if size is not None:
        size = [int(s) for s in size]
        if cfg.INPUT.CROP.ENABLED:
            if [int(s) for s in cfg.INPUT.CROP.SIZE] != size:
                raise ValueError(f"the artifact expects {size[0]}x{size[1]} images but INPUT.CROP.SIZE is "
                                 f"{list(cfg.INPUT.CROP.SIZE)}")
        elif [int(s) for s in cfg.INPUT.SIZE_TEST] != size:
            cfg = cfg.clone().defrost()
            cfg.INPUT.SIZE_TEST = size
    return build_transforms(cfg, is_train=False)


# the config keys that decide the test-time transform: what travels with a deployed model
# (export metadata, serving manifests) so images are prepared the same way without the config
PREPROCESS_KEYS = ("INPUT.SIZE_TEST", "INPUT.INTERPOLATION", "INPUT.CROP.ENABLED", "INPUT.CROP.SIZE")


def preprocess_spec(cfg) -> dict[str, Any]:
    """``{"INPUT.SIZE_TEST": [...], ...}``: the :data:`PREPROCESS_KEYS` values of ``cfg``."""
    spec = {}
    for key in PREPROCESS_KEYS:
        node = cfg
        for part in key.split("."):
            node = node[part]
        spec[key] = list(node) if isinstance(node, (list, tuple)) else node
    return spec


def preprocess_transform(spec: dict[str, Any], size: Sequence[int] | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """The test-time transform a :func:`preprocess_spec` describes (optionally for another input size)."""
    from omnireid.config import get_cfg

    unknown = sorted(set(spec) - set(PREPROCESS_KEYS))
    if unknown:
        raise ConfigError(f"unknown preprocessing keys {unknown}; expected {list(PREPROCESS_KEYS)}")
    cfg = get_cfg()
    cfg.merge_from_list([item for key, value in spec.items() for item in (key, value)])
    return inference_transform(cfg, size)


def build_batch_transform(cfg, is_train: bool) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    """The batch-level transform (random patch) or None."""
    if is_train and cfg.INPUT.RPT.ENABLED:
        return RandomPatch(prob=cfg.INPUT.RPT.PROB)
    return None
