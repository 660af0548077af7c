"""The evaluator registry, the protocol -> default evaluator map, and ``build_evaluator``.

An evaluator class registers in ``EVALUATOR_REGISTRY`` and has ``from_config(cfg, test_set,
output_dir)``, ``reset()``, ``process(batch, outputs)`` (``outputs``: the eval-mode model's dict,
``features`` and optionally ``logits`` / ``attributes`` ...) and ``evaluate() -> dict[str, float]``.
The evaluator registered for a test set's protocol (``register_protocol``) evaluates it unless
``TEST.EVALUATOR`` names another one.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from omnireid.utils.registry import Registry

T = TypeVar("T")

EVALUATOR_REGISTRY = Registry("evaluator")
# protocol name ("reid", "retrieval", ...) -> its default evaluator class
PROTOCOL_EVALUATORS = Registry("test protocol")


def register_protocol(protocol: str) -> Callable[[T], T]:
    """Class decorator: this evaluator evaluates test sets of ``protocol`` by default.

    Use it under ``@EVALUATOR_REGISTRY.register()``; a protocol has exactly one default evaluator.
    """
    return PROTOCOL_EVALUATORS.register(protocol)


def evaluator_class(cfg: Any, protocol: str) -> Any:
    """``TEST.EVALUATOR`` when set, else the evaluator registered for ``protocol``."""
    if cfg.TEST.EVALUATOR:
        try:
            return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)
        except KeyError as exc:
            raise KeyError(f"TEST.EVALUATOR: {exc.args[0]}") from None
    try:
        return PROTOCOL_EVALUATORS.get(protocol)
    except KeyError as exc:
        raise KeyError(f"no evaluator for the test protocol {protocol!r} (is the task that defines it imported?): "
                       f"{exc.args[0]}") from None


def build_evaluator(cfg: Any, test_set: Any, output_dir: str | None = None) -> Any:
    """The evaluator of ``test_set`` (a ``omnireid.data.TestSet``: ``name``, ``protocol``, ``items``, ``meta``)."""
    return evaluator_class(cfg, test_set.protocol).from_config(cfg, test_set, output_dir)
