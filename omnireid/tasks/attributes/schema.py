"""What a model predicts for attribute recognition: binary attributes and categorical groups.

Why one object: the dataset encodes labels with it, the head sizes its outputs from it, the
evaluator splits the output columns with it, ``omnireid predict`` decodes with it, and it travels
in ``metadata.json`` / checkpoints so a deployed model knows what its columns mean.

Output layout of an attribute model (eval mode ``outputs["attributes"]``, one row per image)::

    [ p(binary_0) ... p(binary_{A-1}) | softmax(group_0) (K_0 columns) | softmax(group_1) | ... ]

Binary columns are sigmoid probabilities; each group's columns are a softmax over its classes.
Training logits (``attribute_logits``) have the same layout before the sigmoid/softmax.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

UNKNOWN_GROUP = -1  # group label of an image whose class is not annotated
# Binary attributes are predicted positive when p > threshold (``TEST.THRES``). The training run's
# threshold travels with the model in metadata.json under THRESHOLD_KEY, so ``omnireid predict``
# decides as the evaluation did.
DEFAULT_THRESHOLD = 0.5
THRESHOLD_KEY = "attribute_threshold"


def check_threshold(value: float, where: str = "TEST.THRES") -> float:
    """``value`` as a float in [0, 1) (p > 1 never holds), else a ConfigError naming ``where``."""
    from omnireid.utils.errors import ConfigError

    threshold = float(value)
    if not 0.0 <= threshold < 1.0:
        raise ConfigError(f"{where} must be in [0, 1) (positive when p > threshold), got {value}")
    return threshold


@dataclass(frozen=True)
class AttributeGroup:
    """A one-of-K attribute (Market-1501's age, a colour given as one-of-N): trained with softmax CE."""

    name: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ValueError(f"attribute group {self.name!r} needs at least two classes, got {list(self.classes)}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"attribute group {self.name!r} lists a class twice: {list(self.classes)}")


@dataclass(frozen=True)
class EncodedLabels:
    """One image's labels as the sample fields ``attributes``, ``attribute_mask``, ``attribute_groups``."""

    attributes: np.ndarray  # (A,) float32 0/1 (0 where unknown)
    mask: np.ndarray  # (A,) float32, 1 = annotated, 0 = unknown (ignored by loss and metrics)
    groups: np.ndarray  # (G,) int64 class index per group, UNKNOWN_GROUP = unknown

    def as_fields(self) -> dict[str, np.ndarray]:
        return {"attributes": self.attributes, "attribute_mask": self.mask, "attribute_groups": self.groups}


@dataclass(frozen=True)
class AttributeSchema:
    """Names of the binary attributes and of the categorical groups with their classes."""

    binary: tuple[str, ...]
    groups: tuple[AttributeGroup, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = list(self.binary) + [g.name for g in self.groups]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"attribute names must be unique; repeated: {repeated}")
        if not names:
            raise ValueError("an attribute schema needs at least one binary attribute or group")

    # sizes ----------------------------------------------------------------------------------
    @property
    def num_binary(self) -> int:
        return len(self.binary)

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    @property
    def num_outputs(self) -> int:
        """Width of the model's attribute output: binary columns plus every group's classes."""
        return self.num_binary + sum(len(g.classes) for g in self.groups)

    def group_slices(self) -> list[slice]:
        """The output columns of each group, in order."""
        slices, start = [], self.num_binary
        for group in self.groups:
            slices.append(slice(start, start + len(group.classes)))
            start += len(group.classes)
        return slices

    def output_names(self) -> list[str]:
        """A name per output column: ``hat`` for a binary one, ``age=adult`` for a group class."""
        return list(self.binary) + [f"{g.name}={c}" for g in self.groups for c in g.classes]

    # metadata -------------------------------------------------------------------------------
    def to_metadata(self) -> dict[str, Any]:
        """The ``TrainData.metadata`` / ``metadata.json`` entries (plain JSON types)."""
        return {"attribute_names": list(self.binary),
                "attribute_groups": {g.name: list(g.classes) for g in self.groups}}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "AttributeSchema":
        if "attribute_names" not in metadata:
            raise KeyError(f"metadata has no 'attribute_names' (keys: {sorted(metadata)}); it does not describe "
                           "an attribute model")
        groups = metadata.get("attribute_groups") or {}
        return cls(tuple(metadata["attribute_names"]),
                   tuple(AttributeGroup(name, tuple(classes)) for name, classes in groups.items()))

    # labels ---------------------------------------------------------------------------------
    def encode(self, values: Mapping[str, Any], where: str = "") -> EncodedLabels:
        """Vectors for one image from ``{name: value}``.

        Binary values: 0/1, booleans, "0"/"1"; ``None``, ``""`` or NaN = unknown. Group values: a
        class name (or its index); ``None``/``""`` = unknown. A missing name is unknown.
        """
        attributes = np.zeros(self.num_binary, dtype=np.float32)
        mask = np.zeros(self.num_binary, dtype=np.float32)
        for i, name in enumerate(self.binary):
            value = _binary_value(values.get(name), name, where)
            if value is not None:
                attributes[i], mask[i] = value, 1.0
        groups = np.full(self.num_groups, UNKNOWN_GROUP, dtype=np.int64)
        for g, group in enumerate(self.groups):
            groups[g] = _group_value(values.get(group.name), group, where)
        return EncodedLabels(attributes, mask, groups)


def _is_unknown(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def _binary_value(value: Any, name: str, where: str) -> float | None:
    if _is_unknown(value):
        return None
    text = str(value).strip().lower() if isinstance(value, str) else value
    table = {"0": 0.0, "1": 1.0, "true": 1.0, "false": 0.0}
    if isinstance(text, str) and text in table:
        return table[text]
    if isinstance(text, (bool, int, float, np.integer, np.floating)) and float(text) in (0.0, 1.0):
        return float(text)
    raise ValueError(f"{where}binary attribute {name!r} must be 0 or 1 (empty = unknown), got {value!r}")


def _group_value(value: Any, group: AttributeGroup, where: str) -> int:
    if _is_unknown(value):
        return UNKNOWN_GROUP
    text = str(value).strip()
    if text in group.classes:
        return group.classes.index(text)
    if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(group.classes):
        return int(value)
    raise ValueError(f"{where}attribute {group.name!r} must be one of {list(group.classes)} (empty = unknown), "
                     f"got {value!r}")


def stack_labels(encoded: Sequence[EncodedLabels]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(attributes (N, A), mask (N, A), groups (N, G))`` of many images."""
    if not encoded:
        raise ValueError("no labelled images")
    return (np.stack([e.attributes for e in encoded]), np.stack([e.mask for e in encoded]),
            np.stack([e.groups for e in encoded]))
