"""What travels with a deployed model: ``metadata.json`` beside the artifact (or the checkpoint).

The trainer writes the training-set metadata (``class_names``, ``attribute_names``, attribute groups,
...) beside its checkpoints. An export copies it next to the artifact and adds what a deployment
needs without the config: the input size and test-time resize (``preprocess``), the normalisation baked
into the graph (``pixel_mean`` / ``pixel_std``, 0-255 scale) and the artifact's ``output_names``.
``Predictor.metadata`` exposes it and ``omnireid predict --artifact`` decodes with it.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

from omnireid.utils.errors import UserError
from omnireid.utils.file_io import atomic_write_text

METADATA_FILE = "metadata.json"  # the same name the trainer writes beside checkpoints (engine.setup)


class MetadataError(UserError, ValueError):
    """A ``metadata.json`` that is missing where it is required, unreadable, or not a JSON object."""


def deployment_metadata(cfg: Any, run_metadata: dict[str, Any], output_names: Sequence[str]) -> dict[str, Any]:
    """The run's metadata plus what a deployed model needs to be used without its config."""
    from omnireid.data.transforms import preprocess_spec

    from .predictor import model_input_size

    metadata = dict(run_metadata)
    metadata.update({
        "input_size": list(model_input_size(cfg)),
        "preprocess": preprocess_spec(cfg),
        "input_format": "float32 RGB (N, 3, H, W), 0-255; normalisation is inside the model",
        "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
        "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD],
        "output_names": list(output_names),
    })
    return metadata


def metadata_transform(metadata: dict[str, Any], source: str = "metadata") -> Callable[[Any], Any]:
    """The test-time transform (PIL -> uint8 CHW) ``metadata["preprocess"]`` describes: the pipeline
    the model was evaluated with, rebuilt without its config."""
    from omnireid.data.transforms import preprocess_transform

    spec = metadata.get("preprocess")
    if not isinstance(spec, dict):
        raise MetadataError(f"{source}: no 'preprocess' entry (the test-time resize); re-export the model with "
                            "this version of omnireid")
    try:
        return preprocess_transform(spec, metadata.get("input_size"))
    except (KeyError, TypeError, ValueError) as exc:
        raise MetadataError(f"{source}: malformed 'preprocess' entry {spec!r}: {exc}") from None


def read_metadata(path: str) -> dict[str, Any]:
    """A ``metadata.json`` file as a dict; anything else is a one-line error naming the file."""
    if not os.path.isfile(path):
        raise MetadataError(f"{path}: metadata file not found")
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise MetadataError(f"{path}: expected a JSON object, got {type(metadata).__name__}")
    return metadata


def write_metadata(folder: str, metadata: dict[str, Any]) -> str:
    """``folder/metadata.json``, written atomically."""
    path = os.path.join(folder, METADATA_FILE)
    try:
        text = json.dumps(metadata, indent=1)
    except TypeError as exc:
        raise TypeError(f"deployment metadata must be JSON-serialisable: {exc}") from None
    atomic_write_text(path, text + "\n")
    return path


def beside(path: str) -> str:
    """The ``metadata.json`` path in the folder of ``path`` (an artifact or a checkpoint)."""
    return os.path.join(os.path.dirname(os.path.abspath(path)), METADATA_FILE)


def checkpoint_metadata(weights: str) -> dict[str, Any]:
    """A training run's metadata: ``metadata.json`` beside the checkpoint, else the checkpoint's own
    ``metadata`` entry, else ``{}`` (a checkpoint from before metadata existed)."""
    sibling = beside(weights)
    if os.path.isfile(sibling):
        return read_metadata(sibling)
    from omnireid.utils.file_io import load_checkpoint_file

    return dict(load_checkpoint_file(weights).get("metadata") or {})
