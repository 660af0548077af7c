"""What a report is made from: one test set's features, items and protocol, savable as ``.npz``.

A features file holds ``features`` (N, D) float32, ``img_paths`` (N,), one array per item field
(``field_targets``, ``field_camids``, ...), one per other model output a protocol's report reads
(``output_attributes``, ...) and ``info``, a JSON string with the test set's ``name``,
``protocol``, ``meta`` (e.g. ``num_query``, verification ``pairs``) and the distance ``metric``.
Loading never unpickles (``allow_pickle=False``).
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omnireid.utils.errors import MissingFileError, UserError
from omnireid.utils.file_io import atomic_write_bytes

FEATURES_FORMAT = "omnireid-report-features"


class ReportInputError(UserError, ValueError):
    """A features file or report input is unusable; the message names the file and the problem."""


@dataclass
class ReportInput:
    """One evaluated test set: ``features[i]`` belongs to ``items[i]`` (a dict with ``img_path`` and fields)."""

    name: str
    protocol: str
    features: np.ndarray
    items: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    metric: str = "cosine"
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # other model outputs, one row per item

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        if self.features.ndim != 2 or len(self.features) != len(self.items):
            raise ReportInputError(f"{self.name}: {len(self.items)} items but features of shape "
                                   f"{self.features.shape} (expected ({len(self.items)}, D))")
        self.outputs = {name: np.asarray(values, dtype=np.float32) for name, values in self.outputs.items()}
        for name, values in self.outputs.items():
            if values.ndim != 2 or len(values) != len(self.items):
                raise ReportInputError(f"{self.name}: {len(self.items)} items but model output {name!r} of shape "
                                       f"{values.shape}")

    def output(self, name: str) -> np.ndarray:
        """Model output ``name`` (N, K) (an error naming it when the input lacks it)."""
        if name not in self.outputs:
            raise ReportInputError(f"{self.name}: the {self.protocol!r} report needs the model output {name!r}; this "
                                   f"input has {sorted(self.outputs) or 'only features'} (rebuild it with "
                                   "`omnireid report --config-file ...`)")
        return self.outputs[name]

    def field(self, name: str) -> np.ndarray:
        """The values of item field ``name`` as an array (an error naming the field when items lack it)."""
        missing = [i for i, item in enumerate(self.items) if name not in item]
        if missing:
            raise ReportInputError(f"{self.name}: item {missing[0]} ({self.items[missing[0]].get('img_path')}) has "
                                   f"no field {name!r}, which the {self.protocol!r} report needs")
        return np.asarray([item[name] for item in self.items])

    @property
    def paths(self) -> list[str]:
        return [str(item.get("img_path", "")) for item in self.items]


def save_features(data: ReportInput, path: str) -> None:
    """Write ``data`` as a features file (atomically)."""
    fields = sorted({k for item in data.items for k in item if k != "img_path"})
    arrays: dict[str, np.ndarray] = {"features": data.features, "img_paths": np.asarray(data.paths, dtype=str)}
    for name in fields:
        values = [item.get(name) for item in data.items]
        if any(v is None for v in values):
            raise ReportInputError(f"{data.name}: field {name!r} is missing on some items")
        arrays[f"field_{name}"] = np.asarray(values)
        if arrays[f"field_{name}"].dtype == object:
            raise ReportInputError(f"{data.name}: field {name!r} does not form a regular array")
    for name, values in data.outputs.items():
        arrays[f"output_{name}"] = values
    info = {"format": FEATURES_FORMAT, "name": data.name, "protocol": data.protocol, "meta": data.meta,
            "metric": data.metric, "fields": fields, "outputs": sorted(data.outputs)}
    arrays["info"] = np.asarray(json.dumps(info, default=_plain))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _plain(value: Any) -> Any:
    """NumPy values in test-set metadata (verification pairs, labels) as JSON lists and numbers."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"test-set metadata value of type {type(value).__name__} is not JSON-serialisable")


def load_features(path: str) -> ReportInput:
    """Read a features file written by :func:`save_features`."""
    if not os.path.isfile(path):
        raise MissingFileError(f"--features: no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"{path}: not a readable .npz features file: {exc}") from None
    if "info" not in arrays or "features" not in arrays:
        raise ReportInputError(f"{path}: not a report features file (no 'info'/'features'; write one with "
                               "`omnireid report --config-file ...`, which saves features_<dataset>.npz)")
    info = json.loads(str(arrays["info"]))
    if info.get("format") != FEATURES_FORMAT:
        raise ReportInputError(f"{path}: unknown features format {info.get('format')!r}")
    paths = arrays["img_paths"].tolist()
    items = [{"img_path": p} for p in paths]
    for name in info["fields"]:
        for item, value in zip(items, arrays[f"field_{name}"].tolist()):
            item[name] = value
    outputs = {name: arrays[f"output_{name}"] for name in info.get("outputs", [])}
    return ReportInput(name=info["name"], protocol=info["protocol"], features=arrays["features"], items=items,
                       meta=info.get("meta", {}), metric=info.get("metric", "cosine"), outputs=outputs)
