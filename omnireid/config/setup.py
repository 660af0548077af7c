"""Reading a configuration the way every entry point does: defaults (with extensions), file, overrides."""
from __future__ import annotations

from typing import Sequence

from .config import CfgNode
from .defaults import get_cfg


def setup_cfg(config_file: str | None, opts: Sequence[str] = ()) -> CfgNode:
    """Defaults and registered extensions, then the YAML file (with its ``_BASE_`` chain and FastReID
    V1.0 key names translated), then ``KEY VALUE`` overrides.

    Train, eval, export, extract and distillation teachers all read config files through this, so a
    file means the same thing on every path.
    """
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg
