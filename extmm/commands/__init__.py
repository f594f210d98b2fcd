"""Subcommands. Each module exposes `register(subparsers)` and sets `handler` on its parser."""
