"""Command line: `python -m extmm [COMMAND] ...`.

Each subcommand lives in its own module under `extmm.commands` and exposes
`register(subparsers)`; a module is listed only if it exists, so `--help` shows only
commands that really work. With no command, the main job (`run`) starts.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import extmm.commands
from extmm.argtypes import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    # OneLineParser: a usage mistake is one line and exit 2, in every subcommand.
    parser = OneLineParser(
        prog="python -m extmm",
        description="Market maker for the Extended perpetuals exchange.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(extmm.commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"extmm.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # No subcommand (or only options) → the main job.
    default = "run" if "run" in parser._subparsers._group_actions[0].choices else None  # type: ignore[union-attr,operator]
    if default and (not args_list or args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, default)
    args = parser.parse_args(args_list)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    return int(args.handler(args) or 0)
