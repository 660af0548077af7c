"""Built-in tasks (classification, retrieval, face, attributes...): one sub-package per task.

A task is a set of registered pieces (datasets, heads, losses, evaluators, a config section through
``omnireid.config.register_config``, a demo spec, CLI commands), plugged into the core through
registries and the trainer's ``build_*`` seams. Importing this package imports every sub-package, so
adding a task is adding a folder ``omnireid/tasks/<task>/`` whose ``__init__.py`` imports its modules.
The core never imports this package; the CLI does, before it reads a config.
"""
from __future__ import annotations

import importlib
import pkgutil


def _import_tasks() -> list[str]:
    names = sorted(info.name for info in pkgutil.iter_modules(__path__) if info.ispkg)
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


TASKS: tuple[str, ...] = tuple(_import_tasks())

__all__ = ["TASKS"]
