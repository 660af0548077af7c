"""Import FastReID 1.4.0 (the reference implementation in compatibility tests) on current Python/PyTorch.

FastReID needs ``collections.Mapping`` & co. and a ``torch._six`` module, both removed since; this
installs the two stand-ins, then imports it or skips the calling test module with the reason.
"""
from __future__ import annotations

import collections
import collections.abc
import importlib
import sys
import types
from types import ModuleType

import pytest

INSTALL_HINT = ("install it with `pip install --no-deps fastreid==1.4.0 && pip install yacs termcolor` "
                "(as `make test` does)")


def _install_shims() -> None:
    for name in ("Mapping", "MutableMapping", "Sequence", "Iterable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    if "torch._six" not in sys.modules:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)
        six.int_classes = int
        six.container_abcs = collections.abc
        six.inf = float("inf")
        sys.modules["torch._six"] = six


def import_fastreid(*modules: str) -> list[ModuleType]:
    """``import_fastreid("fastreid.config", ...)`` -> those modules, or skip the test module."""
    _install_shims()
    try:
        return [importlib.import_module(name) for name in modules]
    except ImportError as exc:
        pytest.skip(f"fastreid is not importable ({exc}); {INSTALL_HINT}", allow_module_level=True)
