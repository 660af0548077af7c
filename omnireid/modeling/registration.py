"""Import every module of a plug-in package so that its pieces register themselves.

Used by the ``backbones``, ``heads``, ``losses`` and ``meta_arch`` packages: adding a new piece is
adding one file; no list of imports has to be edited.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
from types import MappingProxyType
from typing import Iterable, Mapping

logger = logging.getLogger(__name__)


def import_package_modules(package: str, path: Iterable[str]) -> Mapping[str, str]:
    """Import every module of ``package`` (whose ``__path__`` is ``path``), in name order.

    A module whose optional third-party dependency is not installed is skipped with a log line and
    reported in the returned read-only mapping ``{module name: missing package}``; any other import
    error (including a broken omnireid import) propagates.
    """
    unavailable: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        module_name = f"{package}.{info.name}"
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] == "omnireid":
                raise
            unavailable[info.name] = exc.name
            logger.info("%s is unavailable: it needs %r, which is not installed", module_name, exc.name)
    return MappingProxyType(unavailable)
