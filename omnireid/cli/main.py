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
    "omnireid.cli.distill",
)


def _load_commands() -> None:
    for module in COMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency inside the module
                raise


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
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
