"""The ``omnireid`` console command. Subcommands live in their own modules and register here.

Before the command line is parsed, the built-in tasks (``omnireid.tasks``) and the plugins are
imported, so whatever they register (datasets, models, evaluators, config sections, demos,
commands) exists for the command: ``omnireid --plugin my_pkg.my_task train ...`` or
``OMNIREID_PLUGINS=my_pkg.my_task,other omnireid train ...``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, Sequence

from omnireid.utils.errors import UserError, as_user_error, one_line
from omnireid.utils.registry import Registry

# name -> function(subparsers) that adds the subcommand and sets ``func`` on its parser.
COMMAND_REGISTRY = Registry("command")

# Modules that define subcommands; importing one registers its commands.
COMMAND_MODULES = (
    "omnireid.cli.train",
    "omnireid.cli.data",
    "omnireid.cli.demo",
    "omnireid.cli.export",
    "omnireid.cli.extract",
    "omnireid.cli.convert",
    "omnireid.cli.index",
    "omnireid.cli.report",
    "omnireid.cli.serve",
    "omnireid.cli.predict",
    "omnireid.cli.tune",
    "omnireid.cli.adapt",
    "omnireid.cli.ensemble",
)


PLUGINS_ENV = "OMNIREID_PLUGINS"


def _load_commands() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)


def plugin_modules(argv: Sequence[str]) -> list[str]:
    """Modules named by ``$OMNIREID_PLUGINS`` (comma-separated), then by ``--plugin`` options before the command."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    known, _ = pre.parse_known_args(_leading_options(argv))
    from_env = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    return from_env + list(known.plugin)


def _leading_options(argv: Sequence[str]) -> list[str]:
    """The arguments before the command name (the command's own arguments may contain anything)."""
    out: list[str] = []
    args = list(argv)
    while args and args[0].startswith("-"):
        out.append(args.pop(0))
        if out[-1] == "--plugin" and args:
            out.append(args.pop(0))
    return out


def load_plugins(modules: Sequence[str]) -> None:
    """Import the built-in tasks, then each plugin module (an import error names the plugin)."""
    importlib.import_module("omnireid.tasks")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise PluginError(f"cannot import plugin {module!r} (--plugin / ${PLUGINS_ENV}): {exc}") from exc


class PluginError(UserError, ImportError):
    """A plugin module named on the command line or in the environment cannot be imported."""


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(prog="omnireid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help=f"import MODULE before running the command (repeatable; also ${PLUGINS_ENV})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in sorted(COMMAND_REGISTRY.names()):
        add: Callable[[argparse._SubParsersAction], None] = COMMAND_REGISTRY.get(name)
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every :class:`~omnireid.utils.errors.UserError` (from any command, including a
    loader worker's, and a plugin that cannot be imported) becomes one ``omnireid <command>: error: ...``
    line and exit code 2; other exceptions are bugs and propagate with their traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        load_plugins(plugin_modules(argv))
    except PluginError as exc:
        print(f"omnireid: error: {one_line(str(exc))}", file=sys.stderr, flush=True)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        error = as_user_error(exc)
        if error is None:
            raise
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))  # e.g. "index build"
        print(f"omnireid {command}: error: {one_line(str(error))}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
