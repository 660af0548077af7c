"""Atomic writes and safe loading: a crash never corrupts the last good file."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, BinaryIO, Callable

import torch

from omnireid.utils.errors import CheckpointError, MissingFileError, OutputError


def atomic_write_bytes(path: str, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data), mode="wb")


def atomic_write_text(path: str, text: str) -> None:
    _atomic(path, lambda f: f.write(text), mode="w")


def atomic_write_stream(path: str, write: Callable[[BinaryIO], Any]) -> None:
    """``write(f)`` into a binary temporary file next to ``path``, renamed over ``path`` when it returns
    (for outputs written piece by piece, e.g. a distance matrix block by block)."""
    _atomic(path, write, mode="wb")


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    _atomic(path, lambda f: torch.save(obj, f), mode="wb")


def _atomic(path: str, write, mode: str) -> None:
    """Write to a temporary file next to ``path``, then rename it over ``path``.

    A failure at any point (disk full, killed process, read-only folder) leaves ``path`` as it was;
    an operating-system error is reported as an :class:`OutputError` naming the file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        # torch.save re-raises a failed write (disk full) as a RuntimeError of its zip writer: find the OSError
        os_error = _os_error_in_chain(exc)
        if os_error is not None and not isinstance(exc, OutputError):
            kept = " (the previous file is unchanged)" if os.path.exists(path) else ""
            raise OutputError(f"cannot write {path}: {os_error.strerror or os_error}{kept}") from exc
        raise


def _os_error_in_chain(exc: BaseException | None) -> OSError | None:
    """``exc`` or the first OSError it was raised from / while handling."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def ensure_writable_dir(path: str, what: str = "OUTPUT_DIR") -> str:
    """Create ``path`` if needed and check a file can be created in it (``what`` names the setting).

    Checked by creating a file rather than with ``os.access``, which says yes to root even on a
    read-only file system.
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise OutputError(f"{what} {path} is not a writable folder: {exc.strerror or exc}") from exc
    return path


def load_checkpoint_file(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint without executing pickled code (``weights_only=True``).

    Raises a clear error naming the file when it is missing or not a plain tensor checkpoint.
    """
    if not os.path.isfile(path):
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError (truncated zip), ...
        raise CheckpointError(
            f"cannot load {path} safely (weights_only=True): {_load_failure(exc)}. Only tensors, numbers, strings, "
            "lists and dicts are accepted; re-save the file as a plain state dict."
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint or state dict, got {type(obj).__name__}")
    return obj


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load`` failed, in one sentence (its weights_only error adds advice around the reason)."""
    paragraphs = [p.strip() for p in str(exc).split("\n\n") if p.strip()]
    if not paragraphs:
        return f"empty or truncated file ({type(exc).__name__})"
    if paragraphs[0].startswith("Weights only load failed") and len(paragraphs) > 1:
        return " ".join(paragraphs[1].split()).rstrip(".")
    return paragraphs[0].splitlines()[0]


def append_json_line(path: str, record: dict) -> None:
    """Append one JSON object per line (metrics.json)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
