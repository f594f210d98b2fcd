"""Recording public market data and replaying it: format, the round trip, the fill model.

Recording runs against the simulator over real WebSockets (in-process server, and the
`record` command against a `python -m extmm sim` subprocess) and in virtual time from an
in-process runner. A replay must hand the bot the very book the recording saw; our
orders rest in the recorded book with a conservative queue-position model; the whole bot
runs on a replay and ends flat of open orders with its PnL adding up.
"""

from __future__ import annotations

import gzip
import json
import random
import signal
import subprocess
import sys
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest
import trio
from loguru import logger

from extmm.commands.record import record_main
from extmm.config import load_config
from extmm.domain.book import Book
from extmm.domain.units import Side
from extmm.markets import bundled_markets, spec_from_market
from extmm.research.backtest.observe import book_levels
from extmm.research.backtest.options import BacktestOptions
from extmm.research.backtest.run import backtest
from extmm.research.record import RunnerSource, record, record_synthetic
from extmm.sim.engine import EngineConfig
from extmm.sim.inproc import InProcessVenue
from extmm.sim.launch import build_engine
from extmm.sim.recording import RecordingError, RecordingWriter, expand_parts, part_path, read_recording
from extmm.sim.replay import replay_venue
from extmm.sim.replay_engine import ReplayEngine
from extmm.sim.runner import SimRunner
from extmm.sim.server import serve_simulator
from extmm.venue.types import OrderRequest

START_MS = 1_790_000_000_000


@pytest.fixture(autouse=True)
def quiet_logs():
    logger.disable("")
    yield
    logger.enable("")


# -- the format ----------------------------------------------------------------------------------


def test_writer_rotates_and_reader_reads_every_part_in_order(tmp_path):
    base = tmp_path / "rec.ndjson.gz"
    writer = RecordingWriter(
        base,
        header={"source": "test", "markets": {"X-USD": {"name": "X-USD"}}},
        rotate_bytes=20_000,
        compresslevel=1,
    )
    rng = random.Random(1)
    sent = []
    for i in range(3000):  # enough incompressible text for zlib to emit blocks as it goes
        noise = "".join(rng.choice("0123456789") for _ in range(40))
        text = json.dumps({"type": "DELTA", "data": {"i": i, "noise": noise}, "ts": i, "seq": i + 1})
        writer.write_frame(START_MS + i, "orderbook", "X-USD", text)
        sent.append(i)
    assert writer.write_frame(START_MS + 3000, "trades", "X-USD", "not json") is False
    writer.close()
    assert len(writer.parts) > 2
    assert writer.parts[1] == part_path(base, 1) == tmp_path / "rec.1.ndjson.gz"
    assert expand_parts([base]) == writer.parts
    reader = read_recording([base])
    records = list(reader)
    headers = [r for r in records if r["k"] == "header"]
    assert [h["part"] for h in headers] == list(range(len(writer.parts)))
    frames = [r for r in records if r["k"] == "orderbook"]
    assert [f["f"]["data"]["i"] for f in frames] == sent  # byte-exact frames, in order
    assert [f["t"] for f in frames] == [START_MS + i for i in sent]
    assert records[-1] == {"t": START_MS + 3000, "k": "trades", "m": "X-USD", "bad": "not json"}
    assert all(p.stat().st_size < 20_000 + 70_000 for p in writer.parts)  # zlib emits in blocks
    assert reader.markets == {"X-USD": {"name": "X-USD"}}


def test_reader_survives_garbage_lines_and_a_truncated_part(tmp_path):
    path = tmp_path / "cut.ndjson.gz"
    lines = [
        json.dumps({"k": "header", "v": 1, "markets": {}}),
        '{"t": 1, "k": "mark", "m": "A", "f": {}}',
        "{garbage",
        '{"t": 2, "k": "mark", "m": "A", "f": {}}',
    ] + [json.dumps({"t": 3 + i, "k": "mark", "m": "A", "f": {"i": i}}) for i in range(2000)]
    blob = gzip.compress(("\n".join(lines) + "\n").encode())
    path.write_bytes(blob[: len(blob) - 200])  # a recorder killed mid-write
    reader = read_recording([path])
    records = list(reader)
    assert records[1]["t"] == 1 and records[2]["t"] == 2
    assert reader.stats.bad_lines == 1
    assert reader.stats.truncated_parts == 1
    assert 100 < len(records) < len(lines)


def test_unreadable_recordings_are_refused_clearly(tmp_path):
    with pytest.raises(RecordingError, match="no such recording"):
        read_recording([tmp_path / "nope.ndjson.gz"])
    old = tmp_path / "old.ndjson.gz"
    old.write_bytes(gzip.compress(b'{"k": "header", "v": 99}\n'))
    with pytest.raises(RecordingError, match="format 99"):
        read_recording([old])
    headless = tmp_path / "headless.ndjson.gz"
    headless.write_bytes(gzip.compress(b'{"t": 1}\n'))
    with pytest.raises(RecordingError, match="header"):
        read_recording([headless])


# -- recording from the simulator --------------------------------------------------------------


async def test_records_the_simulator_over_websockets(tmp_path):
    out = tmp_path / "ws.ndjson.gz"
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(
            partial(
                serve_simulator,
                markets=["BTC-USD", "ETH-USD"],
                seed=4,
                start_ms=START_MS,
                verify_signatures=False,
            )
        )
        summary = await record_main(
            rest_url=handle.rest_url,
            stream_url=handle.stream_url,
            markets=["BTC-USD", "ETH-USD"],
            out=out,
            rotate_bytes=None,
            duration_s=3.0,  # real time: >= 20 book frames even when connecting takes a second on a loaded machine
            kinds=["orderbook", "trades", "funding", "mark"],
            source_name="sim",
            wall_clock_ms=lambda: float(handle.runner.now_ms()),
        )
        nursery.cancel_scope.cancel()
    assert summary["files"] == [str(out)]
    assert summary["frames"]["orderbook"] >= 2 * 10  # 100 ms cadence, two markets
    assert summary["frames"]["mark"] >= 2
    reader = read_recording([out])
    assert set(reader.header["markets"]) == {"BTC-USD", "ETH-USD"}
    assert reader.header["markets"]["BTC-USD"]["tradingConfig"]["minPriceChange"] == "1"
    records = list(reader)
    for market in ("BTC-USD", "ETH-USD"):
        book = [r for r in records if r.get("k") == "orderbook" and r["m"] == market]
        assert book[0]["f"]["type"] == "SNAPSHOT"
        assert [r["f"]["seq"] for r in book] == list(range(1, len(book) + 1))
        assert all(a["t"] <= b["t"] for a, b in zip(book, book[1:], strict=False))
        # Receive times are the simulator's epoch here: within a tick of the frames' own timestamps.
        assert all(abs(r["t"] - r["f"]["ts"]) <= 200 for r in book)
        opens = {r["s"] for r in records if r.get("k") == "open" and r["m"] == market}
        assert opens == {"orderbook", "trades", "funding", "mark"}


async def test_record_command_against_a_sim_subprocess(tmp_path):
    out = tmp_path / "cli.ndjson.gz"
    sim = [sys.executable, "-m", "extmm", "sim", "--markets", "ETH-USD", "--no-verify"]
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            partial(trio.run_process, sim, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
        )
        buffer = b""
        while b"\n" not in buffer:
            chunk = await process.stdout.receive_some()
            assert chunk, "sim exited before announcing itself"
            buffer += chunk
        where = json.loads(buffer.split(b"\n", 1)[0])
        command = [
            sys.executable,
            "-m",
            "extmm",
            "record",
            "--endpoint",
            where["rest"],
            where["stream"],
            "--markets",
            "ETH-USD",
            "--out",
            str(out),
            "--duration",
            "1.5",
            "--kinds",
            "orderbook,mark",
        ]
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
        process.send_signal(signal.SIGINT)
        await process.wait()
    assert done.returncode == 0, done.stderr.decode()
    summary = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert summary["files"] == [str(out)] and summary["frames"]["orderbook"] > 5
    kinds = {r.get("k") for r in read_recording([out])}
    assert kinds == {"header", "open", "orderbook", "mark"}


def test_record_command_refuses_bad_arguments(capsys):
    from extmm.cli import main as cli_main

    assert (
        cli_main(
            [
                "record",
                "--network",
                "testnet",
                "--markets",
                "BTC-USD",
                "--out",
                "x.gz",
                "--kinds",
                "orderbook,candles",
            ]
        )
        == 2
    )
    assert "candles" in capsys.readouterr().err


# -- the round trip ------------------------------------------------------------------------------


async def _top_sampler(stream, spec, tops: list, start: float, times: list[float]) -> None:
    book = Book(spec)

    async def reader() -> None:
        while True:
            msg = await stream.receive()
            book.apply(msg.data, msg.seq, msg.type)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for offset in times:
            await trio.sleep_until(start + offset)
            top = book.top()
            tops.append((top.best_bid_ticks, top.best_bid_lots, top.best_ask_ticks, top.best_ask_lots))
        nursery.cancel_scope.cancel()


async def test_replay_hands_the_bot_the_book_the_recording_saw(tmp_path, autojump_clock):
    path = tmp_path / "rt.ndjson.gz"
    market = "BTC-USD"
    spec = spec_from_market(bundled_markets()[market])
    times = [k + 0.05 for k in range(2, 120)]  # between the 100 ms book flushes
    live: list = []
    engine = build_engine(markets=[market], seed=9, start_ms=START_MS, verify_signatures=False)
    runner = SimRunner(engine, seed=9)
    writer = RecordingWriter(
        path, header={"source": "test", "markets": {market: engine.market_object(market)}}
    )
    venue = InProcessVenue(runner, engine.create_account())
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        start = trio.current_time()

        async def watch_live() -> None:
            async with venue.orderbook_stream(market) as stream:
                await _top_sampler(stream, spec, live, start, times)

        nursery.start_soon(watch_live)
        await record(
            RunnerSource(runner),
            writer,
            markets=[market],
            epoch_ms=runner.now_ms,
            kinds=("orderbook", "trades"),
            duration_s=125,
        )
        nursery.cancel_scope.cancel()

    replayed: list = []
    async with replay_venue([path], markets=[market]) as replay:
        start = trio.current_time()
        async with replay.venue.orderbook_stream(market) as stream:
            await _top_sampler(stream, spec, replayed, start, times)
        assert replay.driver.stats.bad_frames == 0
    assert len(live) == len(times) and all(t[0] is not None for t in live)
    assert replayed == live


# -- the fill model ------------------------------------------------------------------------------


def _body(oid: str, side: str, price: str, qty: str, *, post_only: bool = True) -> dict:
    return {
        "id": oid,
        "market": "BTC-USD",
        "type": "LIMIT",
        "side": side,
        "qty": qty,
        "price": price,
        "reduceOnly": False,
        "postOnly": post_only,
        "timeInForce": "GTT",
        "expiryEpochMillis": START_MS + 3_600_000,
        "fee": "0.001",
        "nonce": "1",
        "selfTradeProtectionLevel": "ACCOUNT",
        "settlement": {"signature": {"r": "0x1", "s": "0x1"}, "starkKey": "0x1", "collateralPosition": "1"},
    }


def _level(price: str, qty: str) -> dict:
    return {"p": price, "q": qty}


@pytest.fixture
def replay_engine():
    engine = ReplayEngine(
        EngineConfig(verify_signatures=False, strict_nonce=False),
        start_ms=START_MS,
        markets=[bundled_markets()["BTC-USD"]],
    )
    account = engine.create_account(balance=Decimal(100_000))
    engine.on_book(
        "BTC-USD",
        "SNAPSHOT",
        {
            "m": "BTC-USD",
            "b": [_level("84000", "0.00100"), _level("83999", "0.00200")],
            "a": [_level("84002", "0.00100"), _level("84003", "0.00200")],
        },
        START_MS,
    )
    return engine, account.id


def _filled(engine, account_id) -> Decimal:
    return sum((t.qty for t in engine.trades(account_id, "BTC-USD")), Decimal(0))


def test_a_resting_order_waits_for_the_queue_ahead_of_it(replay_engine):
    engine, acc = replay_engine
    engine.place_order(acc, _body("q-1", "BUY", "84000", "0.00050"), START_MS + 1)
    assert engine.queues["BTC-USD"] and next(iter(engine.queues["BTC-USD"].values())).ahead == 100
    # A sell print at our price eats into the 100 lots ahead of us: no fill yet.
    engine.on_prints("BTC-USD", [(False, 84000, 60, 0)], START_MS + 2)
    assert _filled(engine, acc) == 0
    # Cancels shrink the level to 20 lots: at most 20 can still be ahead of us.
    engine.on_book(
        "BTC-USD",
        "DELTA",
        {"m": "BTC-USD", "b": [{"p": "84000", "q": "-0.00080", "c": "0.00020"}], "a": []},
        START_MS + 3,
    )
    assert next(iter(engine.queues["BTC-USD"].values())).ahead == 20
    # 30 lots trade at our price: 20 go to the queue ahead, 10 to us.
    engine.on_prints("BTC-USD", [(False, 84000, 30, 0)], START_MS + 4)
    assert _filled(engine, acc) == Decimal("0.00010")
    # A print through our price (a sell below our bid) fills the rest, whatever its size.
    engine.on_prints("BTC-USD", [(False, 83999, 1, 0)], START_MS + 5)
    assert _filled(engine, acc) == Decimal("0.00050")
    assert engine.fills == {"queue": 1, "through": 1}
    (position,) = engine.positions(acc, "BTC-USD")
    assert position.side == "LONG" and position.size == Decimal("0.00050")
    # Prints of our own side (buy aggressors) never fill a bid.
    engine.place_order(acc, _body("q-2", "BUY", "84000", "0.00010"), START_MS + 6)
    engine.on_prints("BTC-USD", [(True, 84002, 500, 0), (True, 84000, 500, 0)], START_MS + 7)
    assert _filled(engine, acc) == Decimal("0.00050")


def test_an_order_that_improves_the_book_is_first_in_line(replay_engine):
    engine, acc = replay_engine
    engine.place_order(acc, _body("i-1", "SELL", "84001", "0.00010"), START_MS + 1)
    assert next(iter(engine.queues["BTC-USD"].values())).ahead == 0
    # A recorded bid crossing our ask without a print does not fill us.
    engine.on_book(
        "BTC-USD",
        "DELTA",
        {"m": "BTC-USD", "b": [{"p": "84001", "q": "0.001", "c": "0.00100"}], "a": []},
        START_MS + 2,
    )
    assert _filled(engine, acc) == 0
    engine.on_prints("BTC-USD", [(True, 84001, 4, 0)], START_MS + 3)
    assert _filled(engine, acc) == Decimal("0.00004")


def test_crossing_orders_are_rejected_post_only_or_take_the_recorded_book(replay_engine):
    engine, acc = replay_engine
    engine.place_order(acc, _body("x-1", "BUY", "84002", "0.00010"), START_MS + 1)
    (state,) = engine.orders_by_external_id(acc, "x-1")
    assert (state.status, state.status_reason) == ("REJECTED", "POST_ONLY_FAILED")
    engine.place_order(acc, _body("x-2", "BUY", "84003", "0.00150", post_only=False), START_MS + 2)
    trades = sorted(engine.trades(acc, "BTC-USD"), key=lambda t: t.price)
    assert [(t.price, t.qty, t.is_taker) for t in trades] == [
        (Decimal("84002"), Decimal("0.00100"), True),
        (Decimal("84003"), Decimal("0.00050"), True),
    ]
    bids, asks = engine.book_levels("BTC-USD")
    assert bids == [] and asks == []  # the recorded liquidity it did not take is not left behind
    assert engine.fills["taker"] == 2


# -- the bot on a replay -----------------------------------------------------------------------


RECORDED_S = 150  # long enough for fills on both markets; every check below is relative to it


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "recorded.ndjson.gz"
    logger.disable("")
    try:
        stats, _ = record_synthetic(path, markets=["BTC-USD", "ETH-USD"], seconds=RECORDED_S, seed=21)
    finally:
        logger.enable("")
    return path, stats


def test_the_bot_trades_a_replay_and_ends_clean(recorded):
    path, stats = recorded
    cfg = load_config("config/config.json")
    result = backtest(cfg, BacktestOptions(hours=1.0, replay=(path,), order_latency_ms=20.0))
    summary = result.summary
    assert result.mode == "replay"
    assert result.virtual_seconds == pytest.approx(RECORDED_S, abs=1.0)  # ended by the data, not --hours
    # Every recorded book frame, once — from the moment the Feed subscribes: the startup book
    # check comes first, and what went by meanwhile arrives folded into one snapshot.
    book = [r for r in read_recording([path]) if r.get("k") == "orderbook"]
    early = [r for r in book if r["t"] <= book[0]["t"] + 1000]  # the startup check's window (≤ 1 s)
    got = result.messages_by_kind["book"]
    assert stats.frames["orderbook"] - len(early) <= got <= stats.frames["orderbook"] + len({r["m"] for r in book})
    # Market events: every price level of those frames, once (hftbacktest's rows).
    levels = sum(book_levels(r["f"].get("data")) for r in book)
    early_levels = sum(book_levels(r["f"].get("data")) for r in early)
    assert levels - early_levels <= result.market_events_by_kind["book_levels"] <= levels + early_levels
    assert summary.orders_sent > 0 and summary.fills > 0
    assert set(result.details["fills_by_reason"]) <= {"queue", "through"}  # post-only: never a taker
    assert summary.open_orders_at_exit == 0 and result.venue_open_orders == 0
    pnl = summary.pnl
    assert pnl["net"] == pnl["spread"] + pnl["inventory"] + pnl["fees"] + pnl["funding"]
    for market in summary.markets:
        from_fills = sum(
            (f.qty if f.side == "BUY" else -f.qty for f in result.fills if f.market == market), Decimal(0)
        )
        assert summary.position[market] == from_fills


async def test_feed_and_order_latencies_apply(recorded, autojump_clock):
    path, _ = recorded
    async with replay_venue([path], markets=["ETH-USD"], feed_latency_s=0.25, order_latency_s=0.04) as replay:
        start, start_ms = trio.current_time(), replay.driver.start_ms
        lags = []
        async with replay.venue.orderbook_stream("ETH-USD") as stream:
            for _ in range(30):
                msg = await stream.receive()
                lags.append(trio.current_time() - (start + (msg.ts - start_ms) / 1000.0))
        assert lags == pytest.approx([0.25] * 30, abs=0.0015)
        mid = Decimal(str(replay.engine.books["ETH-USD"].mid))
        order = OrderRequest(
            market="ETH-USD",
            side=Side.BUY,
            qty=Decimal("0.010"),
            price=(mid * Decimal("0.99")).quantize(Decimal("0.1")),
            external_id="lat-1",
            expiry_ms=replay.now_ms() + 60_000,
            max_fee_rate=Decimal("0.0005"),
        )
        before = trio.current_time()
        await replay.venue.place_order(order)
        assert trio.current_time() - before == pytest.approx(0.04)


def test_a_replay_must_hold_the_configured_markets(recorded):
    path, _ = recorded
    cfg = load_config("config/config.json")
    cfg = type(cfg)(markets=[type(cfg.markets[0])(name="SOL-USD")])
    with pytest.raises(RecordingError, match="SOL-USD"):
        backtest(cfg, BacktestOptions(replay=(Path(path),)))


def test_backtest_command_replays_a_recording(recorded, capsys, monkeypatch):
    import extmm.ops.logs
    from extmm.cli import main as cli_main

    monkeypatch.setattr(extmm.ops.logs, "configure_logging", lambda **_: None)
    path, stats = recorded
    code = cli_main(
        [
            "backtest",
            "--config",
            "config/config.json",
            "--replay",
            str(path),
            "--hours",
            "0.02",
            "--order-latency-ms",
            "5",
            "--feed-latency-ms",
            "50",
            "--markets",
            "BTC-USD",
        ]
    )
    assert code == 0
    line = json.loads(capsys.readouterr().out)
    assert line["mode"] == "replay" and line["markets"] == ["BTC-USD"]
    assert line["virtual_seconds"] == pytest.approx(72.0, abs=1.0)  # --hours stops it before the data ends
    assert (line["order_latency_ms"], line["feed_latency_ms"]) == (5.0, 50.0)
    assert line["open_orders_at_exit"] == 0
    assert cli_main(["backtest", "--replay", str(path.parent / "missing.ndjson.gz")]) == 2
    assert "no such recording" in capsys.readouterr().err
