"""Load pretrained weights from a local file into a backbone, reporting what did not match."""
from __future__ import annotations

import logging
import os
from typing import Callable, Iterable

import torch
from torch import nn

from omnireid.utils.file_io import load_checkpoint_file

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict")
_PREFIXES = ("module.", "backbone.")


def extract_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The tensor state dict inside a checkpoint.

    Unwraps ``{"model": ...}`` / ``{"state_dict": ...}`` and strips ``module.`` (DDP) and, when the
    checkpoint is a whole reID model, keeps only the ``backbone.`` entries.
    """
    for key in _WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
        elif prefix == "backbone." and any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_pretrained_weights(
    module: nn.Module,
    path: str,
    *,
    cfg_key: str = "MODEL.BACKBONE.PRETRAIN_PATH",
    hint: str = "",
    ignore_prefixes: Iterable[str] = (),
    remap: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> tuple[list[str], list[str]]:
    """Load the state dict in ``path`` into ``module`` non-strictly; return (missing, unexpected) keys.

    Keys starting with ``ignore_prefixes`` (e.g. an ImageNet classifier ``fc.``) are dropped quietly;
    entries whose shape differs from the module's are skipped and reported as unexpected. Nothing is
    downloaded: a missing or empty ``path`` is an error that names ``cfg_key`` and, via ``hint``,
    what file to put there.
    """
    if not path:
        raise ValueError(f"{cfg_key} is empty but pretrained weights were requested. Nothing is downloaded at "
                         f"run time: put a local state-dict file on disk and set {cfg_key} to it. {hint}".strip())
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{cfg_key}: pretrained weights file not found: {path}. {hint}".strip())
    state = extract_state_dict(load_checkpoint_file(path))
    if remap is not None:  # adapt a foreign layout, e.g. resample a ViT's position embeddings
        state = remap(state)
    ignore_prefixes = tuple(ignore_prefixes)
    ignored = sorted(k for k in state if ignore_prefixes and k.startswith(ignore_prefixes))
    own = module.state_dict()
    mismatched = sorted(k for k in state if k in own and k not in ignored and own[k].shape != state[k].shape)
    usable = {k: v for k, v in state.items() if k not in ignored and k not in mismatched}
    result = module.load_state_dict(usable, strict=False)
    missing = sorted(result.missing_keys)
    unexpected = sorted(list(result.unexpected_keys) + mismatched)
    logger.info("Loaded pretrained weights from %s (%d tensors)", path, len(usable) - len(result.unexpected_keys))
    if ignored:
        logger.info("Ignored %d keys not used by the backbone: %s", len(ignored), _abbreviate(ignored))
    for k in mismatched:
        logger.warning("Skipped %s: shape %s in %s, %s in the model", k, tuple(state[k].shape), path,
                       tuple(own[k].shape))
    if missing:
        logger.warning("Missing keys (left at their initialisation): %s", _abbreviate(missing))
    if unexpected:
        logger.warning("Unexpected keys (not used): %s", _abbreviate(unexpected))
    return missing, unexpected


def _abbreviate(keys: list[str], limit: int = 30) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
