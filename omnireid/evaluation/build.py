"""The evaluator registry (``TEST.EVALUATOR``) and its builder."""
from __future__ import annotations

from typing import Any

from omnireid.utils.registry import Registry

# classes with ``from_config(cfg, num_query, output_dir)``, ``reset``, ``process``, ``evaluate``
EVALUATOR_REGISTRY = Registry("evaluator")


def build_evaluator(cfg: Any, num_query: int, output_dir: str | None = None) -> Any:
    """The evaluator named by ``TEST.EVALUATOR`` for a test set whose first ``num_query`` items are queries."""
    return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR).from_config(cfg, num_query, output_dir)
