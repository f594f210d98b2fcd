"""Logging setup: loguru to stderr (human) and optionally a rotating JSON-lines file, with
every registered secret masked in every sink, exceptions and tracebacks included, and a
small buffer of recent warnings for the dashboard footer.

Redaction happens once, in a loguru *patcher* that runs before any sink sees a record:
the message and `extra` values are masked with `extmm.ops.secrets.redact_known`, and an
attached exception is replaced by its masked traceback text (stored in
`record["extra"]["_exception"]`; `record["exception"]` becomes None), so no sink, ours or
one added later, and not even loguru's own sink-error report, can print the raw exception.
Our sinks mask the final text once more as a second line of defence. Tracebacks are the
standard library's (no local variable values, unlike loguru's `diagnose`). Standard
`logging` records (httpx, hypercorn, trio-websocket) and `warnings` are routed into loguru
so they get the same treatment.
"""

from __future__ import annotations

import collections
import inspect
import json
import logging
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from extmm.ops.secrets import SecretValue, redact_known, register_secret

if TYPE_CHECKING:
    from loguru import Record

EXCEPTION_KEY = "_exception"  # where the patcher leaves the masked exception
_JSON_KEY = "_json"
_PRIVATE_PREFIX = "_"
_ANSI_RESET = "\x1b[0m"
_LEVEL_ANSI = {
    "TRACE": "\x1b[2m",
    "DEBUG": "\x1b[34m",
    "INFO": "\x1b[1m",
    "SUCCESS": "\x1b[32;1m",
    "WARNING": "\x1b[33;1m",
    "ERROR": "\x1b[31;1m",
    "CRITICAL": "\x1b[41;97;1m",
}
_PLAIN_TYPES = (bool, int, float, type(None))


# -- redaction ---------------------------------------------------------------------------


def redact_record(record: Record) -> None:
    """The loguru patcher: mask secrets in the message, in `extra` and in the exception.

    Never raises: a patcher error would escape into the caller's `logger.x(...)` call.
    If masking fails the message is dropped rather than risk printing a secret.
    """
    try:
        record["message"] = redact_known(record["message"])
        extra = record["extra"]
        for key, value in list(extra.items()):
            if key == EXCEPTION_KEY or isinstance(value, _PLAIN_TYPES):
                continue
            extra[key] = redact_known(value if isinstance(value, str) else str(value))
        exception = record["exception"]
        if exception is not None:
            if exception.type is not None:
                extra[EXCEPTION_KEY] = _masked_exception(exception.type, exception.value, exception.traceback)
            record["exception"] = None
    except Exception:  # see the docstring
        record["message"] = "[log record dropped: redaction failed]"
        record["extra"] = {}
        record["exception"] = None


def _masked_exception(exc_type: type[BaseException], value: BaseException | None, tb: Any) -> dict[str, str]:
    text = "".join(traceback.format_exception(exc_type, value, tb))
    try:
        summary = str(value) if value is not None else ""
    except Exception:  # a broken __str__ must not stop the log line
        summary = "<unprintable>"
    return {
        "type": exc_type.__name__,
        "value": redact_known(summary),
        "traceback": redact_known(text),
    }


# -- formatting --------------------------------------------------------------------------


def _context(extra: dict[str, Any]) -> str:
    pairs = [f"{k}={v}" for k, v in extra.items() if not k.startswith(_PRIVATE_PREFIX)]
    return "  " + " ".join(pairs) if pairs else ""


def format_text(record: Mapping[str, Any], *, colorize: bool = False) -> str:
    """One human-readable line (plus the traceback, if any), newline-terminated."""
    level = record["level"].name
    stamp = record["time"].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    where = f"{record['name']}:{record['function']}:{record['line']}"
    level_text = f"{level:<8}"
    if colorize:
        level_text = f"{_LEVEL_ANSI.get(level, '')}{level_text}{_ANSI_RESET}"
        stamp = f"\x1b[32m{stamp}{_ANSI_RESET}"
        where = f"\x1b[36m{where}{_ANSI_RESET}"
    line = f"{stamp} | {level_text} | {where} - {record['message']}{_context(record['extra'])}\n"
    exception = record["extra"].get(EXCEPTION_KEY)
    if exception:
        line += exception["traceback"]
    return line


def format_json(record: Mapping[str, Any]) -> str:
    """One JSON object (no newline) for log shippers."""
    extra = record["extra"]
    payload = {
        "time": record["time"].isoformat(),
        "ts": record["time"].timestamp(),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
        "function": record["function"],
        "line": record["line"],
        "process": record["process"].id,
        "thread": record["thread"].name,
        "extra": {k: v for k, v in extra.items() if not k.startswith(_PRIVATE_PREFIX)},
        "exception": extra.get(EXCEPTION_KEY),
    }
    return redact_known(json.dumps(payload, default=str, ensure_ascii=False))


def _json_format(record: Record) -> str:
    # loguru's documented recipe for custom serialisation: stash the text in `extra` and
    # return a template that only references it (the text itself is never parsed).
    record["extra"][_JSON_KEY] = format_json(record)
    return "{extra[" + _JSON_KEY + "]}\n"


class _StderrSink:
    """Writes to whatever `sys.stderr` is at call time, so Rich's Live redirection and
    pytest's capture see our lines."""

    def __init__(self, *, colorize: bool) -> None:
        self.colorize = colorize

    def __call__(self, message: Any) -> None:
        sys.stderr.write(redact_known(format_text(message.record, colorize=self.colorize)))


# -- warnings buffer ---------------------------------------------------------------------


class WarningsBuffer:
    """A loguru sink keeping the last `maxlen` WARNING-or-worse lines, masked and short,
    newest last, for the dashboard footer. Safe to read from any thread."""

    def __init__(self, maxlen: int = 5, *, width: int = 160) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self._width = width
        self._lock = threading.Lock()

    def __call__(self, message: Any) -> None:
        record = message.record
        text = record["message"].splitlines()[0] if record["message"] else ""
        exception = record["extra"].get(EXCEPTION_KEY)
        if exception:
            text += f" ({exception['type']}: {exception['value']})"
        self.add(f"{record['time']:%H:%M:%S} {record['level'].name} {text}")

    def add(self, line: str) -> None:
        line = redact_known(" ".join(line.split()))
        if len(line) > self._width:
            line = line[: self._width - 1] + "…"
        with self._lock:
            self._lines.append(line)

    def lines(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._lines)

    def clear(self) -> None:
        with self._lock:
            self._lines.clear()


# -- standard logging bridge -------------------------------------------------------------


class InterceptHandler(logging.Handler):
    """Routes standard `logging` records into loguru (loguru's documented recipe)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = inspect.currentframe(), 0
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


# -- setup -------------------------------------------------------------------------------


def configure_logging(
    *,
    level: str | int = "INFO",
    json_file: Path | str | None = None,
    rotation: str | int = "50 MB",
    retention: str | int = 10,
    stderr: bool = True,
    extra_secrets: Iterable[str | SecretValue] = (),
    warnings_buffer: WarningsBuffer | None = None,
    colorize: bool | None = None,
    stdlib_level: str | int = "WARNING",
) -> WarningsBuffer:
    """Replace every loguru sink with ours and return the warnings buffer.

    - stderr: human-readable lines at `level` (ANSI colour when stderr is a terminal,
      or as `colorize` says).
    - json_file: JSON lines at `level`, rotated at `rotation` (size "50 MB" or a time
      such as "1 day"), keeping `retention` old files (count or age such as "7 days").
    - extra_secrets: values masked in addition to those `extmm.ops.secrets` already knows.
    - the warnings buffer (a new one unless given) receives WARNING and worse.
    - standard `logging` at `stdlib_level` and above is forwarded into loguru.

    Calling it again reconfigures from scratch (idempotent for the same arguments).
    """
    for secret in extra_secrets:
        register_secret(secret)
    if isinstance(level, str):
        level = level.upper()
    buffer = warnings_buffer if warnings_buffer is not None else WarningsBuffer()
    logger.remove()
    logger.configure(patcher=redact_record)
    # Our sinks format records themselves; loguru's diagnose would print variable values.
    common: dict[str, Any] = {"backtrace": False, "diagnose": False, "catch": True}
    if stderr:
        use_colour = colorize if colorize is not None else _is_tty(sys.stderr)
        logger.add(
            _StderrSink(colorize=use_colour), level=level, format="{message}", colorize=False, **common
        )
    if json_file is not None:
        path = Path(json_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        logger.add(
            str(path),
            level=level,
            format=_json_format,
            rotation=rotation,
            retention=retention,
            encoding="utf-8",
            colorize=False,
            **common,
        )
    logger.add(buffer, level="WARNING", format="{message}", colorize=False, **common)
    _intercept_stdlib(stdlib_level)
    return buffer


def _intercept_stdlib(stdlib_level: str | int) -> None:
    logging.basicConfig(handlers=[InterceptHandler()], level=stdlib_level, force=True)
    logging.captureWarnings(True)


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
