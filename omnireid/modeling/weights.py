"""Weights: the catalog of published pretrained files, and the one function that loads weights.

**Catalog** (weights as data; nothing is downloaded at run time). ``pretrained_manifest.yaml`` (next
to this file) lists, for each backbone variant, the file name, its sha256 (the full digest, or the
hex prefix the publisher puts in the file name; empty when the publisher gives none), the source
URL for the user to fetch, and the input size and mean/std the weights were trained with. With
``MODEL.BACKBONE.PRETRAIN True`` and an empty ``PRETRAIN_PATH`` the file is looked up in
``$OMNIREID_WEIGHTS`` (default ``~/.cache/omnireid/weights``); a missing or mismatching file is an
error telling what to put where.

**Loading**: ``load_weights(model, source, strict=...) -> LoadReport`` is the one way weights get
into a model: the trainer's ``MODEL.WEIGHTS`` (fine-tuning: ``strict=False``, what does not fit is
reported and left at its initialisation), ``--eval-only``, the ``Predictor`` / export / extract and
distillation teachers (``strict=True``: deployment and teachers never run on partly random weights),
the FastReID converter (``strict=True`` on the renamed state dict) and pretrained backbones
(``strict=False``, through ``backbones.pretrained.load_pretrained_weights``). Files are read with
``torch.load(weights_only=True)``: loading never executes pickled code. Entries under
``ignore_prefixes`` (a distiller's training-only state, an ImageNet classifier) are dropped before
matching and listed in the report.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch
import yaml
from torch import nn

from omnireid.utils.file_io import load_checkpoint_file

from omnireid.utils.errors import CheckpointError, MissingFileError, UnknownNameError

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
        raise UnknownNameError(f"no pretrained weights are listed for {name!r} in {path}; set "
                               f"MODEL.BACKBONE.PRETRAIN_PATH to a local file instead. Listed: {', '.join(sorted(entries))}")
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
            raise MissingFileError(f"MODEL.BACKBONE.PRETRAIN_PATH={pretrain_path!r} does not exist")
        return pretrain_path
    entry = get_weights_entry(name, manifest_path)
    target = os.path.join(weights_dir(), entry.file)
    if not os.path.isfile(target):
        raise MissingFileError(
            f"pretrained weights for {name!r} not found: put {entry.file!r} into {weights_dir()!r} "
            f"(set ${WEIGHTS_ENV} to use another folder), downloading it from {entry.url}; "
            "or set MODEL.BACKBONE.PRETRAIN_PATH to the file")
    if entry.sha256:
        actual = sha256_of(target)
        if not actual.startswith(entry.sha256):
            raise CheckpointError(
                f"{target}: sha256 {actual} does not match the manifest's {entry.sha256!r} for {name!r}; "
                f"the file is corrupt or a different version. Re-download it from {entry.url}")
    else:
        logger.warning("%s: the publisher gives no checksum for %r; the file is used unverified", target, name)
    return target


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
StateDict = dict[str, torch.Tensor]
# Keys a checkpoint may nest its state dict under: ours and FastReID's ``model``, other tools' ``state_dict``.
WRAPPER_KEYS = ("model", "state_dict")
# Counters some writers (older FastReID) leave out; unused by an eval-mode model, so their absence is only a note.
BENIGN_MISSING_SUFFIXES = ("num_batches_tracked",)


class WeightsError(CheckpointError, ValueError):
    """The weights in a file do not fit the model (the message names the file and the keys)."""


@dataclass(frozen=True)
class ShapeMismatch:
    key: str
    in_file: tuple[int, ...]
    in_model: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.key}: {self.in_file} in the file vs {self.in_model} in the model"


@dataclass(frozen=True)
class LoadReport:
    """What ``load_weights`` did with each key of the file and of the model."""

    source: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]  # in the model, not in the file: left at their initialisation
    unexpected: tuple[str, ...]  # in the file, not in the model: unused
    mismatched: tuple[ShapeMismatch, ...]  # in both with different shapes: not loaded
    ignored: tuple[str, ...] = ()  # dropped on purpose (``ignore_prefixes``)
    benign_missing: tuple[str, ...] = ()  # missing counters (BENIGN_MISSING_SUFFIXES), kept from the model

    @property
    def complete(self) -> bool:
        """Every model entry came from the file and every file entry was used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self, limit: int = 8) -> str:
        """One line listing the missing / unexpected / mismatched keys (abbreviated)."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing from the file ({_abbreviate(self.missing, limit)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} not in the model ({_abbreviate(self.unexpected, limit)})")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} with another shape ({_abbreviate(self.mismatched, limit // 2)})")
        return "; ".join(parts)


def state_dict_from_checkpoint(checkpoint: Mapping[str, object], source: str = "<state dict>") -> StateDict:
    """The tensor state dict inside a checkpoint: ``{"model": ...}`` / ``{"state_dict": ...}`` or bare.

    A ``module.`` prefix on every key (saved from DistributedDataParallel) is removed.
    """
    for key in WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]  # type: ignore[assignment]
            break
    not_tensors = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsError(f"{source}: not a state dict of tensors (entries {_abbreviate(not_tensors, 5)} are not "
                           "tensors); expected a checkpoint written by omnireid/FastReID or a plain state dict")
    state = dict(checkpoint)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state  # type: ignore[return-value]


def load_weights(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], *, strict: bool,
                 ignore_prefixes: Iterable[str] = (), remap: Callable[[StateDict], StateDict] | None = None,
                 source_name: str | None = None, hint: str = "") -> LoadReport:
    """Copy the weights of ``source`` (a checkpoint path or a state dict) into ``model``.

    ``strict=True``: any missing, unexpected or shape-mismatched key is a ``WeightsError`` naming the
    file and the keys, raised before anything is copied. ``strict=False``: the entries that fit are
    copied, the rest is reported (logged and returned). ``remap`` adapts a foreign layout (e.g. a
    ViT's position embeddings) before matching; ``hint`` is appended to the error (what to check).
    A DistributedDataParallel / DataParallel wrapper is looked through.
    """
    if isinstance(source, Mapping):
        name = source_name or "<state dict>"
        state = state_dict_from_checkpoint(source, name)
    else:
        name = source_name or os.fspath(source)
        state = state_dict_from_checkpoint(load_checkpoint_file(os.fspath(source)), name)
    if remap is not None:
        state = remap(state)
    target = model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model
    prefixes = tuple(ignore_prefixes)
    ignored = tuple(sorted(k for k in state if prefixes and k.startswith(prefixes)))
    state = {k: v for k, v in state.items() if k not in ignored}
    own = target.state_dict()
    mismatched = tuple(ShapeMismatch(k, tuple(state[k].shape), tuple(own[k].shape))
                       for k in sorted(state) if k in own and state[k].shape != own[k].shape)
    absent = sorted(k for k in own if k not in state)
    report = LoadReport(
        source=name,
        loaded=tuple(sorted(k for k in state if k in own and state[k].shape == own[k].shape)),
        missing=tuple(k for k in absent if not k.endswith(BENIGN_MISSING_SUFFIXES)),
        unexpected=tuple(sorted(k for k in state if k not in own)),
        mismatched=mismatched,
        ignored=ignored,
        benign_missing=tuple(k for k in absent if k.endswith(BENIGN_MISSING_SUFFIXES)),
    )
    if strict and not report.complete:
        raise WeightsError(f"{name} does not fit the {type(target).__name__} built from the config: "
                           f"{report.problems()}{'; ' + hint if hint else ''}")
    target.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    _log(report, type(target).__name__)
    return report


def _log(report: LoadReport, model_name: str) -> None:
    logger.info("Loaded %d tensors into %s from %s", len(report.loaded), model_name, report.source)
    if report.ignored:
        logger.info("Ignored %d entries of %s on purpose: %s", len(report.ignored), report.source,
                    _abbreviate(report.ignored))
    if report.benign_missing:
        logger.info("%d BatchNorm counters absent from %s: kept the model's", len(report.benign_missing),
                    report.source)
    for mismatch in report.mismatched:
        logger.warning("Skipped %s", mismatch)
    if report.missing:
        logger.warning("Missing keys (left at their initialisation): %s", _abbreviate(report.missing))
    if report.unexpected:
        logger.warning("Unexpected keys (not used): %s", _abbreviate(report.unexpected))


def _abbreviate(items: Iterable[object], limit: int = 30) -> str:
    items = [str(item) for item in items]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
