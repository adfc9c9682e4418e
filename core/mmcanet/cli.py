"""Command-line entry point `mmcanet`: dispatches to the subcommand modules in mmcanet.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .commands import COMMAND_MODULES
from .errors import MMCANetError


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand that is importable."""
    parser = argparse.ArgumentParser(prog="mmcanet", description="SAR-optical cloud removal (MMCANet family).")
    parser.add_argument("--version", action="version", version=f"mmcanet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"commands.{name}"):
                continue  # subcommand not implemented in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 user error, 130 cancelled)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mmcanet: interrupted", file=sys.stderr)
        return 130
    except MMCANetError as exc:
        print(f"mmcanet {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
