"""Images to features for the gallery index and the server: decode (with limits), the test transform,
then any exported artifact through :class:`omnireid.inference.Predictor`.

The preprocessing is stored in the index manifest when the index is built, so the server resizes
exactly as the gallery was resized, whatever config is (or is not) at hand when it starts.
"""
from __future__ import annotations

import hashlib
import io
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from omnireid.data.common import DECODE_ERRORS
from omnireid.data.decode import to_rgb
from omnireid.data.transforms import preprocess_spec, preprocess_transform
from omnireid.utils.errors import MissingFileError, UserError


class BadImageError(ValueError):
    """An uploaded image cannot be used; the message says why (answered with HTTP 400)."""


class BadArtifactError(UserError, ValueError):
    """The model artifact cannot be loaded or does not fit the index; the message names it."""


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Bytes -> RGB image. Dimensions are checked from the header, before the pixels are decoded."""
    if not data:
        raise BadImageError("the image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width < 1 or height < 1:
                raise BadImageError(f"the image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise BadImageError(f"the image is {width}x{height} = {width * height} pixels; "
                                    f"the limit is {max_pixels} pixels")
            return to_rgb(img)
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError("not an image in a format Pillow reads (JPEG, PNG, WebP, BMP, ...)") from None
    except DECODE_ERRORS as exc:
        raise BadImageError(f"not a readable image: {exc}") from None


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ImageEncoder:
    """``encoder(batch) -> (N, D) features`` and ``encoder.prepare(image) -> uint8 (3, H, W)``."""

    def __init__(self, predictor, preprocess: dict[str, Any], input_size: Sequence[int]) -> None:
        self.predictor = predictor
        self.preprocess = dict(preprocess)
        self.input_size = [int(s) for s in input_size]
        self.transform: Callable[[Image.Image], torch.Tensor] = preprocess_transform(preprocess, self.input_size)

    @classmethod
    def from_artifact(cls, artifact: str, cfg=None, preprocess: dict[str, Any] | None = None,
                      size: Sequence[int] | None = None, config_file: str | None = None,
                      opts: Sequence[str] = ()) -> "ImageEncoder":
        """Load ``artifact``; preprocessing from ``preprocess`` (a manifest's) or ``cfg``'s test transform.
        ``size`` is needed only when the artifact declares no input size."""
        from omnireid.inference import Predictor

        if not os.path.isfile(artifact):
            raise MissingFileError(f"--artifact: no such file: {artifact}")
        kwargs: dict[str, Any] = {}
        if os.path.splitext(artifact)[1].lower() in (".pth", ".pt"):
            kwargs = {"config_file": config_file, "opts": list(opts)}
        try:
            predictor = Predictor.from_artifact(artifact, **kwargs)
        except Exception as exc:  # each runtime raises its own types (onnxruntime's Fail, InvalidGraph, ...)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BadArtifactError(f"--artifact {artifact}: cannot be loaded: {reason}") from None
        if preprocess is None:
            if cfg is None:
                from omnireid.config import get_cfg

                cfg = get_cfg()
            preprocess = preprocess_spec(cfg)
        input_size = predictor.input_size or (tuple(size) if size else None)
        if input_size is None:
            input_size = tuple(preprocess["INPUT.SIZE_TEST"])
        return cls(predictor, preprocess, input_size)

    @property
    def source(self) -> str:
        return self.predictor.source

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the model and its preprocessing."""
        return {"model": {"artifact": os.path.abspath(self.source), "sha256": file_sha256(self.source),
                          "backend": self.predictor.backend_name},
                "input_size": self.input_size, "preprocess": self.preprocess}

    def prepare(self, image: Image.Image) -> np.ndarray:
        return self.transform(image).numpy()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.predictor(batch)

    def feature_dim(self) -> int:
        """The artifact's feature size, from one forward pass on a blank image."""
        return int(self(np.zeros((1, 3, *self.input_size), dtype=np.uint8)).shape[1])



def check_compatible(encoder: ImageEncoder, manifest: dict, allow_model_change: bool = False) -> None:
    """The artifact must produce the index's features: same dimension, and the same file unless
    ``allow_model_change`` (e.g. the same weights exported to another format)."""
    dim = encoder.feature_dim()
    if dim != int(manifest["dim"]):
        raise BadArtifactError(f"--artifact {encoder.source} gives {dim}-d features but the index holds "
                               f"{manifest['dim']}-d vectors (built with {manifest.get('model', {}).get('artifact')})")
    expected = manifest.get("model", {}).get("sha256")
    if expected and not allow_model_change and file_sha256(encoder.source) != expected:
        raise BadArtifactError(f"--artifact {encoder.source} is not the model the index was built with "
                               f"({manifest['model'].get('artifact')}, sha256 {expected[:12]}...); features would "
                               "not be comparable. Rebuild the index, or pass --allow-model-change if it is the "
                               "same model in another format")
