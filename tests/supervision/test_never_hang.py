"""Issue #15: a backtest (and the bot's startup) never waits for ever for a market's book,
and one seed gives one result."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import trio
from loguru import logger

from extmm.cli import main as cli_main
from extmm.domain.units import MarketSpec
from extmm.markets import bundled_markets, spec_from_market
from extmm.research.record import record_synthetic
from extmm.venue.errors import StreamError
from supervisors.readiness import wait_for_books

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def quiet_logs():
    logger.disable("")
    yield
    logger.enable("")


@pytest.fixture
def keep_log_sinks(monkeypatch):
    import extmm.ops.logs

    monkeypatch.setattr(extmm.ops.logs, "configure_logging", lambda **_: None)


@pytest.fixture(scope="module")
def two_markets(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hang") / "two.ndjson.gz"
    logger.disable("")
    try:
        record_synthetic(path, markets=["BTC-USD", "ETH-USD"], seconds=90, seed=7)
    finally:
        logger.enable("")
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with gzip.open(src, "rb") as fh, gzip.open(dst, "wb") as out:
        for raw in fh:
            record = orjson.loads(raw)
            record = edit(record)
            if record is not None:
                out.write(orjson.dumps(record) + b"\n")
    return dst


def _run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = cli_main(["backtest", "--config", "config/config.json", "--no-plots", *argv])
    captured = capsys.readouterr()
    line = json.loads(captured.out) if captured.out.strip() else None
    return code, line, captured.err


def test_a_market_without_book_frames_is_left_out_by_name(two_markets, tmp_path, capsys, keep_log_sinks):
    # What a recorder leaves when one of its connections failed: ETH-USD in the header, no frames.
    def drop_eth(record):
        return None if record.get("m") == "ETH-USD" and record.get("k") != "header" else record

    path = _rewrite(two_markets, tmp_path / "no-eth.ndjson.gz", drop_eth)
    code, line, err = _run(capsys, "--replay", str(path), "--hours", "1", "--book-timeout-s", "10")
    assert code == 0
    assert line["markets"] == ["BTC-USD"]  # the other market ran
    assert "ETH-USD" in line["markets_left_out"]
    assert "no book frames" in line["markets_left_out"]["ETH-USD"]
    assert "market ETH-USD left out" in err  # visible without any log output
    assert line["virtual_seconds"] < 100  # ended with the data
    # Or it fails the run, naming the market.
    code, line, err = _run(
        capsys, "--replay", str(path), "--hours", "1", "--book-timeout-s", "10", "--missing-book", "fail"
    )
    assert code == 1 and line is None
    assert "ETH-USD" in err and "no valid order book within 10s" in err


def test_a_recording_whose_tick_does_not_match_its_prices_ends_by_itself(two_markets, tmp_path, capsys,
                                                                         keep_log_sinks):
    def bad_tick(record):
        if record.get("k") == "header":
            record["markets"]["BTC-USD"]["tradingConfig"]["minPriceChange"] = "7"
        return record

    path = _rewrite(two_markets, tmp_path / "tick.ndjson.gz", bad_tick)
    code, line, err = _run(capsys, "--replay", str(path), "--markets", "BTC-USD", "--hours", "1")
    assert code == 1 and line is None
    assert "BTC-USD" in err and "not a multiple of 7" in err


def test_a_book_frame_that_cannot_be_applied_mid_run_is_reported_by_name(two_markets, tmp_path, capsys,
                                                                          keep_log_sinks):
    """Once the book is valid, a recorded frame off the grid invalidates it until the next
    snapshot (no quotes meanwhile): the result and the default log level both say so."""
    seen = 0

    def off_grid(record):
        nonlocal seen
        frame = record.get("f")
        if record.get("m") == "BTC-USD" and record.get("k") == "orderbook" and frame["type"] == "DELTA":
            seen += 1
            if seen == 300:
                level = (frame["data"]["b"] or frame["data"]["a"])[0]
                level["p"] = level["p"] + ".5"
        return record

    path = _rewrite(two_markets, tmp_path / "off-grid.ndjson.gz", off_grid)
    code, line, err = _run(capsys, "--replay", str(path), "--markets", "BTC-USD", "--hours", "1")
    assert code == 0 and line["markets"] == ["BTC-USD"]
    assert "BTC-USD" in line["replay_book_errors"] and "not a multiple" in line["replay_book_errors"]["BTC-USD"]
    assert "backtest: replay BTC-USD: a recorded book frame could not be applied" in err


def test_hours_end_a_backtest_even_before_the_bot_is_ready(two_markets, tmp_path, capsys, keep_log_sinks):
    def drop_books(record):
        return None if record.get("k") == "orderbook" else record

    path = _rewrite(two_markets, tmp_path / "nobooks.ndjson.gz", drop_books)
    code, line, err = _run(
        capsys, "--replay", str(path), "--hours", "0.005", "--book-timeout-s", "3600"
    )
    assert code == 1 and line is None
    assert "--hours 0.005 passed" in err and "before the bot was ready" in err


class _Stream:
    def __init__(self, frames):
        self.frames = list(frames)

    async def receive(self):
        if not self.frames:
            await trio.sleep_forever()
        return self.frames.pop(0)


class _Msg:
    def __init__(self, type_, data):
        self.type, self.data, self.seq, self.ts = type_, data, 1, 0


class _Port:
    """BTC-USD sends a good snapshot, ETH-USD nothing, SOL-USD's stream keeps failing."""

    def orderbook_stream(self, market):
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def cm():
            if market == "SOL-USD":
                raise StreamError("refused")
            frames = []
            if market == "BTC-USD":
                frames = [_Msg("SNAPSHOT", {"m": "BTC-USD", "b": [{"p": "100", "q": "1"}],
                                            "a": [{"p": "101", "q": "1"}]})]
            yield _Stream(frames)

        return cm()


async def test_the_startup_gate_reports_each_missing_market_after_its_deadline(autojump_clock):
    specs: dict[str, MarketSpec] = {
        name: spec_from_market(bundled_markets()[name]) for name in ("BTC-USD", "ETH-USD")
    }
    specs["SOL-USD"] = specs["ETH-USD"]
    start = trio.current_time()
    missing = await wait_for_books(_Port(), specs, timeout_s=30.0)
    assert trio.current_time() - start == pytest.approx(30.0)
    assert set(missing) == {"ETH-USD", "SOL-USD"}
    assert missing["ETH-USD"] == "no order book frame received"
    assert "book stream failed" in missing["SOL-USD"] and "refused" in missing["SOL-USD"]


def _backtest_out(tmp: Path, hash_seed: str) -> tuple[dict, bytes]:
    out = tmp / f"run{hash_seed}"
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "extmm", "backtest", "--config", "config/config.json", "--hours", "0.05",
         "--seed", "11", "--no-plots", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout)
    for wall in ("wall_seconds", "events_per_s", "market_events_per_s", "messages_per_s", "out"):
        line.pop(wall)
    return line, (out / "fills.csv").read_bytes()


def test_one_seed_gives_one_result_in_separate_processes(tmp_path):
    first, fills1 = _backtest_out(tmp_path, "1")
    second, fills2 = _backtest_out(tmp_path, "2")  # another string-hash seed: another "machine"
    assert first["fills"] > 0
    assert first == second
    assert fills1 == fills2
    assert len(list(csv.reader(fills1.decode().splitlines()))) == first["fills"] + 1
