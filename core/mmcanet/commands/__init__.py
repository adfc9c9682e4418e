"""Subcommands of the `mmcanet` CLI; each module exposes register(subparsers)."""

COMMAND_MODULES: tuple[str, ...] = ("info", "restore", "train", "evaluate", "simulate", "detect", "stack")
