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


def _float(text: str, *, minimum: float, inclusive: bool) -> float:
    bound = f"a number {'>=' if inclusive else '>'} {minimum:g}"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {bound}, got {text!r}") from None
    if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
        raise argparse.ArgumentTypeError(f"expected {bound}, got {text}")
    return value


def _int(text: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _float(text, minimum=0.0, inclusive=False)


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    return _float(text, minimum=0.0, inclusive=True)


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int(text, minimum=1)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _int(text, minimum=0)


positive_seconds = positive_float  # a finite number of seconds > 0


def log_level(text: str) -> str:
    """One of loguru's levels, any case."""
    value = text.strip().upper()
    if value not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return value


def existing_file(text: str) -> Path:
    """A path to an existing regular file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def existing_file_str(text: str) -> str:
    """`existing_file`, kept as the string the command expects."""
    return str(existing_file(text))


def _creatable(path: Path) -> str | None:
    """Why `path` could not be (or be created as) a directory, or None."""
    if path.exists():
        return None if path.is_dir() else f"{path} is not a directory"
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is not a directory"
    return None


def output_file(text: str) -> Path:
    """A file to write: not a directory, its directory existing or creatable."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, expected a file")
    problem = _creatable(path.parent)
    if problem:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {problem}")
    return path


def output_file_str(text: str) -> str:
    return str(output_file(text))


def output_dir(text: str) -> Path:
    """A directory to write into: existing, or creatable."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory")
    problem = _creatable(path)
    if problem:
        raise argparse.ArgumentTypeError(f"cannot create {text}: {problem}")
    return path


def bundled_market(text: str) -> str:
    """A market the bundled metadata (and so the simulator) has."""
    from extmm.markets import bundled_markets

    known = sorted(bundled_markets())
    if text not in known:
        raise argparse.ArgumentTypeError(f"unknown market {text}; the bundled markets are: {', '.join(known)}")
    return text


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit 2 (the full usage is `--help`)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
