"""Pretrained weights from a local file into a backbone: which entries are the backbone's, then ``load_weights``."""
from __future__ import annotations

import os
from typing import Callable, Iterable

from torch import nn

from omnireid.modeling.weights import LoadReport, StateDict, load_weights, state_dict_from_checkpoint
from omnireid.utils.errors import ConfigError, MissingFileError
from omnireid.utils.file_io import load_checkpoint_file

BACKBONE_PREFIX = "backbone."


def backbone_entries(state: StateDict) -> StateDict:
    """The backbone's entries of a whole reID model's state dict (``backbone.*``, prefix removed);
    a state dict without them is a bare backbone's (e.g. torchvision ImageNet weights) and is kept."""
    if not any(k.startswith(BACKBONE_PREFIX) for k in state):
        return state
    return {k[len(BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}


def load_pretrained_weights(
    module: nn.Module,
    path: str,
    *,
    cfg_key: str = "MODEL.BACKBONE.PRETRAIN_PATH",
    hint: str = "",
    ignore_prefixes: Iterable[str] = (),
    remap: Callable[[StateDict], StateDict] | None = None,
) -> LoadReport:
    """Load ``path`` into ``module`` non-strictly and return the report (logged as well).

    Keys starting with ``ignore_prefixes`` (e.g. an ImageNet classifier ``fc.``) are dropped; entries
    whose shape differs are skipped. Nothing is downloaded: a missing or empty ``path`` is an error
    that names ``cfg_key`` and, via ``hint``, what file to put there.
    """
    if not path:
        raise ConfigError(f"{cfg_key} is empty but pretrained weights were requested. Nothing is downloaded at "
                          f"run time: put a local state-dict file on disk and set {cfg_key} to it. {hint}".strip())
    if not os.path.isfile(path):
        raise MissingFileError(f"{cfg_key}: pretrained weights file not found: {path}. {hint}".strip())
    state = backbone_entries(state_dict_from_checkpoint(load_checkpoint_file(path), path))
    return load_weights(module, state, strict=False, ignore_prefixes=ignore_prefixes, remap=remap, source_name=path)
