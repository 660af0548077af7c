"""insightface's ``.bin`` verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...).

A ``.bin`` is a pickle of ``(bins, issame_list)`` written by Python 2: ``bins`` holds 2N encoded
images, pair ``i`` being ``(bins[2i], bins[2i+1])``, and ``issame_list`` N booleans. A pickle can
run arbitrary code when loaded, so it is read by an unpickler that resolves no global at all
(``find_class`` and persistent ids are refused): only literal bytes, lists, tuples, bools and ints
can be built, nothing is called, and the result is then checked to have exactly the expected shape.
"""
from __future__ import annotations

import io
import os
import pickle

import numpy as np

from omnireid.utils.errors import MissingFileError
from omnireid.utils.file_io import atomic_write_bytes

_ALLOWED = (bytes, list, tuple, bool, int)


class VerificationBinError(ValueError):
    """A ``.bin`` file is not a plain ``(images, issame)`` pickle; the message names the file."""


class _LiteralUnpickler(pickle.Unpickler):
    """Builds only pickle literals: any reference to a class or function is refused."""

    def __init__(self, file: io.BufferedIOBase, path: str) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 ``str`` -> bytes
        self.path = path

    def find_class(self, module: str, name: str):
        raise VerificationBinError(
            f"{self.path}: refused to load: the pickle references {module}.{name}, but an insightface .bin holds "
            "only image bytes and booleans (loading it could run code)")

    def persistent_load(self, pid):
        raise VerificationBinError(f"{self.path}: refused to load: the pickle uses persistent ids")


def _check_literals(obj: object, path: str, depth: int = 0) -> None:
    if depth > 3 or not isinstance(obj, _ALLOWED):
        raise VerificationBinError(f"{path}: refused: found {type(obj).__name__} where an insightface .bin holds "
                                   "only (list of image bytes, list of bools)")
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _check_literals(item, path, depth + 1)


def read_verification_bin(path: str) -> tuple[list[bytes], np.ndarray]:
    """``(images, issame)``: 2N encoded images and an ``(N,)`` bool array, without running any pickled code."""
    if not os.path.isfile(path):
        raise MissingFileError(f"verification set not found: {path}")
    with open(path, "rb") as f:
        try:
            obj = _LiteralUnpickler(f, path).load()
        except VerificationBinError:
            raise
        except Exception as exc:  # truncated or not a pickle at all
            raise VerificationBinError(f"{path}: not a readable insightface .bin pickle ({exc})") from None
    _check_literals(obj, path)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(x, (list, tuple)) for x in obj)):
        raise VerificationBinError(f"{path}: expected a pair (images, issame_list), got {type(obj).__name__} "
                                   f"of length {len(obj) if isinstance(obj, (list, tuple)) else '?'}")
    images, issame = obj
    if not all(isinstance(b, bytes) for b in images):
        raise VerificationBinError(f"{path}: the first element must be a list of encoded images (bytes)")
    if not all(isinstance(s, (bool, int)) and not isinstance(s, bytes) for s in issame):
        raise VerificationBinError(f"{path}: the second element must be a list of booleans")
    if len(images) != 2 * len(issame):
        raise VerificationBinError(f"{path}: {len(images)} images for {len(issame)} pairs (expected twice as many)")
    return list(images), np.asarray([bool(s) for s in issame], dtype=bool)


def write_verification_bin(path: str, images: list[bytes], issame: list[bool]) -> None:
    """Write ``(images, issame)`` in the ``.bin`` layout (a literal-only pickle), atomically."""
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs: need exactly two images per pair")
    data = pickle.dumps(([bytes(b) for b in images], [bool(s) for s in issame]), protocol=4)
    atomic_write_bytes(path, data)
