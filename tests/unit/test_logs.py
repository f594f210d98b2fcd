"""Logging: secrets never reach any sink (messages, bound values, exceptions, tracebacks,
standard-library records), JSON lines parse, the warnings buffer keeps the newest lines."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from extmm.ops.logs import WarningsBuffer, configure_logging
from extmm.ops.secrets import MASK, SecretValue, clear_registered_secrets, register_secret

PRIVATE_KEY = "0x04a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f"
API_KEY = "3f1e9c2ab7d84e6f9a0b1c2d3e4f5a6b"


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    clear_registered_secrets()
    yield
    logger.remove()
    logger.configure(patcher=None)
    logger.add(sys.stderr)
    logging.root.handlers, logging.root.level = root_handlers, root_level
    logging.captureWarnings(False)
    clear_registered_secrets()


def _secret_forms() -> list[str]:
    # The forms a key takes once parsed: as written, without 0x, without leading zeros, decimal.
    core = PRIVATE_KEY[2:].lstrip("0")
    return [PRIVATE_KEY, PRIVATE_KEY[2:], core, str(int(core, 16)), API_KEY]


def _emit_everything() -> None:
    """Every way a secret could reach a log line."""
    logger.info("signing with {}", PRIVATE_KEY)
    logger.bind(api_key=API_KEY, market="BTC-USD").info("request sent")
    logger.bind(key=SecretValue(API_KEY)).info("wrapped secret")
    logger.warning("stark key as int {}", int(PRIVATE_KEY, 16))
    try:
        raise ValueError(f"bad key {PRIVATE_KEY[2:]}")
    except ValueError:
        logger.exception("order signing failed")
    try:
        try:
            raise KeyError(API_KEY)
        except KeyError as inner:
            raise RuntimeError("request failed") from inner
    except RuntimeError as exc:
        logger.opt(exception=exc).error("chained")
    logging.getLogger("httpx").warning("header X-Api-Key: %s", API_KEY)


def test_no_secret_reaches_stderr_or_the_json_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register_secret(SecretValue(API_KEY))
    json_file = tmp_path / "logs" / "extmm.jsonl"
    configure_logging(level="DEBUG", json_file=json_file, extra_secrets=[PRIVATE_KEY], colorize=False)
    _emit_everything()
    logger.complete()

    stderr = capsys.readouterr().err
    written = json_file.read_text(encoding="utf-8")
    for form in _secret_forms():
        assert form.lower() not in stderr.lower()
        assert form.lower() not in written.lower()
    # the lines are there, masked, tracebacks included
    assert "signing with ***" in stderr and "api_key=***" in stderr and "key=***" in stderr
    assert "Traceback (most recent call last)" in stderr and f"ValueError: bad key {MASK}" in stderr
    assert "The above exception was the direct cause" in stderr
    assert f"header X-Api-Key: {MASK}" in stderr

    records = [json.loads(line) for line in written.splitlines()]
    assert len(records) == 7
    by_message = {r["message"]: r for r in records}
    failed = by_message["order signing failed"]
    assert failed["level"] == "ERROR"
    assert failed["exception"]["type"] == "ValueError"
    assert failed["exception"]["value"] == f"bad key {MASK}"
    assert "Traceback" in failed["exception"]["traceback"]
    assert by_message["request sent"]["extra"] == {"api_key": MASK, "market": "BTC-USD"}
    assert by_message[f"header X-Api-Key: {MASK}"]["level"] == "WARNING"


def test_sinks_added_later_get_redacted_records_too() -> None:
    configure_logging(stderr=False, extra_secrets=[API_KEY])
    seen: list[str] = []
    logger.add(lambda m: seen.append(str(m)), format="{message} {extra} {exception}", colorize=False)
    try:
        raise ConnectionError(f"refused for {API_KEY}")
    except ConnectionError:
        logger.bind(token=API_KEY).exception("failed {}", API_KEY)
    assert len(seen) == 1
    assert API_KEY not in seen[0]
    assert "failed ***" in seen[0] and "refused for ***" in seen[0]


def test_level_filters_the_human_sink(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="WARNING", colorize=False)
    logger.info("routine detail")
    logger.warning("something odd")
    err = capsys.readouterr().err
    assert "something odd" in err and "routine detail" not in err


def test_unprintable_exception_is_logged_without_crashing(capsys: pytest.CaptureFixture[str]) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    configure_logging(colorize=False)
    try:
        raise Unprintable()
    except Unprintable:
        logger.exception("weird failure")
    err = capsys.readouterr().err
    assert "weird failure" in err and "Unprintable" in err


def test_warnings_buffer_keeps_the_newest_warning_lines_masked(capsys: pytest.CaptureFixture[str]) -> None:
    buffer = configure_logging(
        warnings_buffer=WarningsBuffer(maxlen=3), extra_secrets=[API_KEY], colorize=False
    )
    logger.info("not a warning")
    for i in range(6):
        logger.warning("warning {} with {}", i, API_KEY)
    try:
        raise TimeoutError(API_KEY)
    except TimeoutError:
        logger.exception("cancel timed out")
    lines = buffer.lines()
    assert len(lines) == 3
    assert [line.split(" ", 2)[1:] for line in lines] == [
        ["WARNING", "warning 4 with ***"],
        ["WARNING", "warning 5 with ***"],
        ["ERROR", "cancel timed out (TimeoutError: ***)"],
    ]
    assert all(API_KEY not in line for line in lines)


def test_warnings_buffer_shortens_long_and_multiline_messages() -> None:
    buffer = WarningsBuffer(maxlen=2, width=40)
    buffer.add("x" * 100)
    buffer.add("first line\nsecond line")
    long_line, multi = buffer.lines()
    assert len(long_line) == 40 and long_line.endswith("…")
    assert multi == "first line second line"


def test_json_file_rotates_and_keeps_the_retention_count(tmp_path: Path) -> None:
    json_file = tmp_path / "bot.jsonl"
    configure_logging(stderr=False, json_file=json_file, rotation=2_000, retention=2)
    for i in range(200):
        logger.info("line {} {}", i, "x" * 40)
    logger.remove()  # closes the file
    files = sorted(tmp_path.iterdir())
    assert 2 <= len(files) <= 3  # the current file and at most `retention` rotated ones
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            assert json.loads(line)["level"] == "INFO"
