"""argparse types shared by the commands: an operator mistake is one line and exit 2.

Each converter raises `argparse.ArgumentTypeError` with a message that names the
expected range, so `python -m extmm run --metrics-port 70000` ends before anything is
opened or sent: `python -m extmm run: error: argument --metrics-port: expected a port
0-65535, got 70000`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def port_number(text: str) -> int:
    """A TCP port 0-65535 (0: the caller's meaning, e.g. disabled or any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port 0-65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0-65535, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return value


def log_level(text: str) -> str:
    """One of loguru's levels, any case."""
    value = text.strip().upper()
    if value not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return value


def existing_file(text: str) -> str:
    """A path to a readable regular file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit 2 (the full usage is `--help`)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
