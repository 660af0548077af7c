"""Import FastReID 1.4.0 (the reference implementation in compatibility tests) on current Python/PyTorch.

FastReID needs ``collections.Mapping`` & co. and a ``torch._six`` module, both removed since; this
installs the two stand-ins, then imports it or skips the calling test module with the reason.
"""
from __future__ import annotations

import collections
import collections.abc
import importlib
import os
import sys
import types
from types import ModuleType
from typing import Sequence

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


SKIPPED_MODULES: list[str] = []  # reported at the end of the run by conftest.py


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def import_fastreid(*modules: str) -> list[ModuleType]:
    """``import_fastreid("fastreid.config", ...)`` -> those modules; without FastReID, skip the calling
    test module (listed in the run's summary), or fail it under ``CI=true``: in CI the reference
    tests must run, never silently pass as skipped."""
    _install_shims()
    try:
        return [importlib.import_module(name) for name in modules]
    except ImportError as exc:
        message = f"fastreid is not importable ({exc}); {INSTALL_HINT}"
        if running_in_ci():
            pytest.fail(f"CI=true: {message}", pytrace=False)
        caller = sys._getframe(1).f_globals.get("__name__", "?")
        SKIPPED_MODULES.append(caller)
        pytest.skip(message, allow_module_level=True)


def fastreid_full_dump(recipe: str, out_dir: str, overrides: Sequence[str] = ()) -> tuple[str, list[str]]:
    """The ``config.yaml`` FastReID 1.4.0 writes for ``recipe``: its own ``get_cfg()``, ``merge_from_file``
    and ``dump()`` (every key of its defaults), as ``OUTPUT_DIR/config.yaml`` after training.

    omnireid recipes follow FastReID's key names; keys FastReID has no notion of (``DATASETS.ROOT``,
    ``KD.TEMPERATURE``, ...) are left out of its input and returned. ``overrides`` are FastReID
    ``KEY VALUE`` pairs (e.g. the distillation backbone name of FastReID's FastDistill project).
    """
    import yaml

    from omnireid.config.fastreid import flatten, nest
    from omnireid.config import load_yaml_with_base

    (config,) = import_fastreid("fastreid.config")
    known = set(flatten(_plain(config.get_cfg())))
    flat = flatten(load_yaml_with_base(recipe))
    dropped = sorted(k for k in flat if k not in known)
    source = os.path.join(out_dir, "fastreid_input.yml")
    with open(source, "w") as f:
        yaml.safe_dump(nest({k: v for k, v in flat.items() if k in known}), f)
    cfg = config.get_cfg()
    cfg.merge_from_file(source)
    cfg.merge_from_list(list(overrides))
    path = os.path.join(out_dir, "config.yaml")
    with open(path, "w") as f:
        f.write(cfg.dump())
    return path, dropped


def _plain(node) -> dict:
    return {k: _plain(v) if isinstance(v, dict) else v for k, v in node.items()}
