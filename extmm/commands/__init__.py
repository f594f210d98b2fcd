"""Subcommands. Each module exposes `register(subparsers)` and sets `handler` on its parser."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from extmm.config import BotConfig


def load_config_or_report(path: str) -> BotConfig | None:
    """The config at `path`, or None after printing one `config error:` line per problem
    (key path first) to stderr; the caller exits 2 and sends nothing to the venue."""
    from extmm.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"config error: {line}", file=sys.stderr)
        return None
