"""Headless commands over the core: everything the window makes can be made here.

Each command group is a module of this package with `register(subparsers)`;
a registered command sets `func(args) -> int`. Errors print one line and exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = [
    "studio.cli.image",
    "studio.cli.latent",
    "studio.cli.chat",
]

# Names known without importing the modules, so `python -m studio` can tell a
# command from GUI options cheaply.
COMMANDS: set[str] = set()


def _load(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latent-studio", description=__doc__)
    _load(parser)
    return parser


def is_command(word: str) -> bool:
    if word.startswith("-"):
        return False
    return word in command_names()


def command_names() -> set[str]:
    if not COMMANDS:
        parser = build_parser()
        for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
            COMMANDS.update(action.choices)
    return COMMANDS


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    from studio.core.errors import UserError

    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
