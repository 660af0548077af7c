"""Atomic writes and safe loading: a crash never corrupts the last good file."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import torch


def atomic_write_bytes(path: str, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data), mode="wb")


def atomic_write_text(path: str, text: str) -> None:
    _atomic(path, lambda f: f.write(text), mode="w")


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    _atomic(path, lambda f: torch.save(obj, f), mode="wb")


def _atomic(path: str, write, mode: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint_file(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint without executing pickled code (``weights_only=True``).

    Raises a clear error naming the file when it is missing or not a plain tensor checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError (truncated zip), ...
        raise RuntimeError(
            f"cannot load {path} safely (weights_only=True): {exc}. Only tensors, numbers, strings, "
            "lists and dicts are accepted; re-save the file as a plain state dict."
        ) from exc
    if not isinstance(obj, dict):
        raise RuntimeError(f"{path}: expected a dict checkpoint or state dict, got {type(obj).__name__}")
    return obj


def append_json_line(path: str, record: dict) -> None:
    """Append one JSON object per line (metrics.json)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
