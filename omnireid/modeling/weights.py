"""Pretrained backbone weights as data: a manifest of local files, checked before use.

Nothing is downloaded at run time. ``pretrained_manifest.yaml`` (next to this file) lists, for each
backbone variant, the file name, its sha256 (the full digest, or the hex prefix the publisher puts
in the file name; empty when the publisher gives none), the source URL for the user to fetch, and
the input size and mean/std the weights were trained with. With ``MODEL.BACKBONE.PRETRAIN True`` and
an empty ``PRETRAIN_PATH`` the file is looked up in ``$OMNIREID_WEIGHTS`` (default
``~/.cache/omnireid/weights``); a missing or mismatching file is an error telling what to put where.
Loading the file into a module is ``omnireid.modeling.backbones.pretrained.load_pretrained_weights``.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass

import yaml

logger = logging.getLogger(__name__)

MANIFEST_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained_manifest.yaml")
WEIGHTS_ENV = "OMNIREID_WEIGHTS"


@dataclass(frozen=True)
class PretrainedWeights:
    """One published weight file for one backbone variant."""

    name: str
    file: str
    sha256: str
    url: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def weights_dir() -> str:
    """Folder searched for manifest files: ``$OMNIREID_WEIGHTS`` or ``~/.cache/omnireid/weights``."""
    return os.path.expanduser(os.environ.get(WEIGHTS_ENV) or os.path.join("~", ".cache", "omnireid", "weights"))


@functools.lru_cache(maxsize=4)
def _read_manifest(path: str) -> dict[str, PretrainedWeights]:
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    entries: dict[str, PretrainedWeights] = {}
    for name, item in raw.items():
        if not isinstance(item, dict) or not isinstance(item.get("sha256", ""), str):
            raise ValueError(f"{path}: entry {name!r} must be a mapping whose sha256 is a quoted string "
                             f"(YAML reads unquoted digits as numbers), got {item!r}")
        try:
            entries[name] = PretrainedWeights(
                name=name, file=str(item["file"]), sha256=(item.get("sha256") or "").lower(), url=str(item["url"]),
                input_size=tuple(item["input_size"]), mean=tuple(item["mean"]), std=tuple(item["std"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: entry {name!r} is malformed ({exc!r}); needs file, url, input_size, "
                             "mean, std and optionally sha256") from exc
    return entries


def manifest(path: str = MANIFEST_PATH) -> dict[str, PretrainedWeights]:
    """All manifest entries by name."""
    return dict(_read_manifest(path))


def get_weights_entry(name: str, path: str = MANIFEST_PATH) -> PretrainedWeights:
    entries = _read_manifest(path)
    if name not in entries:
        raise KeyError(f"no pretrained weights are listed for {name!r} in {path}; set MODEL.BACKBONE.PRETRAIN_PATH "
                       f"to a local file instead. Listed: {', '.join(sorted(entries))}")
    return entries[name]


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_pretrained_path(pretrain_path: str, name: str, manifest_path: str = MANIFEST_PATH) -> str:
    """``pretrain_path`` if given (must exist), else the verified manifest file for ``name``."""
    if pretrain_path:
        if not os.path.isfile(pretrain_path):
            raise FileNotFoundError(f"MODEL.BACKBONE.PRETRAIN_PATH={pretrain_path!r} does not exist")
        return pretrain_path
    entry = get_weights_entry(name, manifest_path)
    target = os.path.join(weights_dir(), entry.file)
    if not os.path.isfile(target):
        raise FileNotFoundError(
            f"pretrained weights for {name!r} not found: put {entry.file!r} into {weights_dir()!r} "
            f"(set ${WEIGHTS_ENV} to use another folder), downloading it from {entry.url}; "
            "or set MODEL.BACKBONE.PRETRAIN_PATH to the file")
    if entry.sha256:
        actual = sha256_of(target)
        if not actual.startswith(entry.sha256):
            raise ValueError(
                f"{target}: sha256 {actual} does not match the manifest's {entry.sha256!r} for {name!r}; "
                f"the file is corrupt or a different version. Re-download it from {entry.url}")
    else:
        logger.warning("%s: the publisher gives no checksum for %r; the file is used unverified", target, name)
    return target
