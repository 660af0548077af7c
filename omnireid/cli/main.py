"""The ``omnireid`` console command. Subcommands live in their own modules and register here."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

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
)


def _load_commands() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input (config, files, data): reported in one line, no traceback."""
    from omnireid.config import ConfigError
    from omnireid.data import EmptyDatasetError
    from omnireid.data.common import CorruptImageError
    from omnireid.data.samplers import SamplerError

    return (ConfigError, FileNotFoundError, EmptyDatasetError, CorruptImageError, SamplerError)


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(prog="omnireid", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in sorted(COMMAND_REGISTRY.names()):
        add: Callable[[argparse._SubParsersAction], None] = COMMAND_REGISTRY.get(name)
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        print(f"omnireid {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
