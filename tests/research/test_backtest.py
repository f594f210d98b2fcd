"""Backtests of the production actor tree in virtual time, and the numbers they report.

Virtual time of two markets (the example config: a quarter of an hour by default, the full
hour with `-m slow`) must keep each market's inventory
within its limit plus one quote, add its PnL components up to the net exactly, agree with
the venue on positions, and leave nothing open. The command writes its JSON line, the
fills CSV and the plots.
"""

from __future__ import annotations

import csv
import json
import math
from decimal import Decimal

import pytest
from loguru import logger

from extmm.cli import main as cli_main
from extmm.config import load_config
from extmm.research.backtest.metrics import per_minute_changes, sharpe
from extmm.research.backtest.options import BacktestOptions
from extmm.research.backtest.run import backtest


@pytest.fixture(autouse=True)
def quiet_logs():
    logger.disable("")
    yield
    logger.enable("")


@pytest.fixture(
    scope="module",
    params=[
        # The default run: a quarter of an hour (every invariant and key below, a quarter the wall time).
        pytest.param(0.25, id="quarter-hour"),
        # The full hour (about 4x the wall time), for `pytest -m slow`: the same tests, longer.
        pytest.param(1.0, id="hour", marks=pytest.mark.slow),
    ],
)
def hour_of_two_markets(request):
    logger.disable("")
    try:
        cfg = load_config("config/config.json")
        assert len(cfg.enabled_markets) == 2
        return cfg, backtest(cfg, BacktestOptions(hours=request.param, seed=3))
    finally:
        logger.enable("")


def test_one_virtual_hour_of_two_markets_keeps_the_invariants(hour_of_two_markets):
    cfg, result = hour_of_two_markets
    seconds = round(result.virtual_seconds)
    assert seconds in (900, 3600) and result.virtual_seconds == pytest.approx(seconds, abs=1.0)
    summary = result.summary
    assert summary.markets == ("BTC-USD", "ETH-USD")
    assert summary.orders_sent > 0 and summary.fills > 0
    assert result.messages_by_kind["book"] > 2 * seconds * 5  # ~10 book frames a second per market

    # Inventory: within the per-market limit plus one quote, at every sample and every fill.
    for market in cfg.enabled_markets:
        allowed = cfg.risk.max_net_position_usd + market.quote_notional_cap_usd
        sampled = [abs(s.position_usd) for s in result.samples if s.market == market.name]
        filled = [abs(float(f.position_after * f.price)) for f in result.fills if f.market == market.name]
        assert sampled and filled
        assert max(sampled + filled) <= allowed, market.name
    assert result.to_json(wall_seconds=1.0)["max_abs_inventory_usd"] <= cfg.risk.max_net_position_usd + 50

    # PnL identity, exactly (Decimal), in total and per market.
    pnl = summary.pnl
    assert pnl["net"] == pnl["spread"] + pnl["inventory"] + pnl["fees"] + pnl["funding"]
    assert pnl["spread"] != 0 and pnl["inventory"] != 0

    # Nothing left open, by the bot's count and by the venue's.
    assert summary.open_orders_at_exit == 0
    assert result.venue_open_orders == 0

    # The venue's positions are what our fills add up to (a fresh account).
    for market in summary.markets:
        from_fills = sum(
            (f.qty if f.side == "BUY" else -f.qty for f in result.fills if f.market == market), Decimal(0)
        )
        assert summary.position[market] == from_fills
    assert summary.fills == len(result.fills)


def test_summary_line_has_the_documented_keys(hour_of_two_markets):
    cfg, result = hour_of_two_markets
    line = result.to_json(wall_seconds=2.0)
    for key in (
        "virtual_seconds",
        "wall_seconds",
        "events",
        "events_per_s",
        "market_events",
        "market_events_per_s",
        "messages",
        "messages_per_s",
        "orders_sent",
        "fills",
        "pnl",
        "max_abs_inventory_usd",
        "limit_usd",
        "sharpe",
        "fill_ratio",
    ):
        assert key in line
    assert set(line["pnl"]) == {"spread", "inventory", "fees", "funding", "net"}
    # events are market events: level updates + prints + mark + funding updates the actors got.
    assert line["events"] == line["market_events"] == sum(result.market_events_by_kind.values())
    assert line["events_per_s"] == line["market_events_per_s"] == pytest.approx(line["events"] / 2.0, rel=1e-3)
    assert set(line["events_by_kind"]) == {"book_levels", "mark", "funding"}  # no trades stream opened
    messages = line["messages_by_kind"]
    assert line["messages"] == sum(messages.values()) and line["messages_per_s"] == pytest.approx(
        line["messages"] / 2.0, rel=1e-3
    )
    assert line["book_frames"] == messages["book"]
    assert line["events_by_kind"]["mark"] == messages["mark"]  # one price per mark frame
    # Full-depth snapshots (2 × 400 levels a market) and multi-level deltas: many levels a frame.
    assert line["events_by_kind"]["book_levels"] > 5 * messages["book"]
    assert line["fill_ratio"] == pytest.approx(result.summary.fills / result.summary.orders_sent, abs=1e-6)
    assert line["limit_usd"] == cfg.risk.max_net_position_usd
    # One hour is 60 per-minute changes (a quarter, 15): too few for an annualised Sharpe; the basis says so.
    basis = line["sharpe_basis"]
    minutes = round(result.virtual_seconds / 60)
    assert basis["periods"] == minutes and basis["min_periods"] > 60 and basis["reported"] is False
    assert line["sharpe"] is None
    assert line["latency_ms"] == {"order": 20.0, "feed": 50.0}
    assert set(line["markouts"]["mean_bps"]) == {"1s", "10s", "60s"}
    assert line["markouts"]["settled"]["1s"] == line["fills"]  # every fill settles its 1 s markout
    assert line["fill_bursts"]["fills"] == 0
    assert 0.0 <= line["time_at_limit"]["any"] <= 1.0
    json.dumps(line)


def test_samples_track_the_bot_every_virtual_second(hour_of_two_markets):
    _, result = hour_of_two_markets
    btc = [s for s in result.samples if s.market == "BTC-USD"]
    assert len(btc) >= round(result.virtual_seconds)
    assert len({s.t for s in btc}) == len(btc)  # one sample per instant (the final one replaces)
    quoted = [s for s in btc if s.bid is not None and s.ask is not None and s.mid is not None]
    assert len(quoted) > len(btc) // 2
    assert all(s.bid < s.ask for s in quoted)
    # Our quotes bracket the book mid most of the time (post-only, never crossing).
    inside = sum(1 for s in quoted if s.bid <= s.mid <= s.ask)
    assert inside > 0.9 * len(quoted)


def test_per_minute_changes_and_sharpe():
    series = [(float(t), 0.5 * t) for t in range(0, 301)]
    changes = per_minute_changes(series)
    assert changes == pytest.approx([30.0] * 5)
    assert sharpe(changes) is None  # no variance
    noisy = [1.0, -0.5, 2.0, 0.5]
    mean = sum(noisy) / 4
    sd = math.sqrt(sum((c - mean) ** 2 for c in noisy) / 3)
    assert sharpe(noisy) == pytest.approx(mean / sd * math.sqrt(525_600))
    assert sharpe([1.0]) is None


@pytest.fixture
def keep_log_sinks(monkeypatch):
    # The command configures logging for its process; in the test run the sinks stay.
    import extmm.ops.logs

    monkeypatch.setattr(extmm.ops.logs, "configure_logging", lambda **_: None)


def test_backtest_command_prints_one_line_and_writes_files(tmp_path, capsys, keep_log_sinks):
    out = tmp_path / "bt"
    code = cli_main(
        ["backtest", "--config", "config/config.json", "--hours", "0.05", "--seed", "1", "--out", str(out)]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["virtual_seconds"] == pytest.approx(180.0, abs=1.0)
    assert line["events"] > 0 and line["events_per_s"] > 0
    with (out / "fills.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == line["fills"]
    assert {r["market"] for r in rows} <= {"BTC-USD", "ETH-USD"}
    assert json.loads((out / "summary.json").read_text())["fills"] == line["fills"]
    pytest.importorskip("matplotlib")
    for name in ("quotes.png", "inventory.png", "pnl.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backtest_command_rejects_a_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"markets": [{"name": "BTC-USD", "base_spread": "abc"}]}')
    assert cli_main(["backtest", "--config", str(bad), "--hours", "0.01"]) == 2
    assert "base_spread" in capsys.readouterr().err


def test_backtest_command_runs_a_subset_of_markets(capsys, keep_log_sinks):
    assert (
        cli_main(["backtest", "--config", "config/config.json", "--markets", "ETH-USD", "--hours", "0.01"])
        == 0
    )
    line = json.loads(capsys.readouterr().out)
    assert line["markets"] == ["ETH-USD"] and line["mode"] == "synthetic"
    assert cli_main(["backtest", "--config", "config/config.json", "--markets", "SOL-USD"]) == 2
    assert "SOL-USD" in capsys.readouterr().err


def test_backtest_command_explains_a_market_it_cannot_simulate(tmp_path, capsys, keep_log_sinks):
    cfg = tmp_path / "sol.json"
    cfg.write_text(json.dumps({"markets": [{"name": "SOL-USD"}]}))
    assert cli_main(["backtest", "--config", str(cfg), "--hours", "0.01"]) == 1
    err = capsys.readouterr().err
    assert "SOL-USD" in err and "Traceback" not in err


async def test_the_observed_port_counts_levels_prints_marks_and_funding():
    from contextlib import asynccontextmanager

    from extmm.research.backtest.observe import ObservedPort
    from extmm.venue.types import StreamMessage

    frames = {
        "book": [
            ("SNAPSHOT", {"b": [{"p": "3", "q": "1"}] * 3, "a": [{"p": "4", "q": "1"}] * 2}),
            ("DELTA", {"b": [{"p": "3", "q": "-1", "c": "0"}], "a": [{"p": "5", "q": "2", "c": "2"}]}),
            ("DELTA", {"b": [], "a": []}),  # a heartbeat: a message, no market event
        ],
        "trades": [(None, [{"p": "4", "q": "1"}] * 3)],
        "mark": [("MP", {"p": "4"})] * 2,
        "funding": [(None, {"f": "0.0001"})],
    }

    class Stream:
        def __init__(self, items):
            self.items = list(items)

        async def receive(self):
            kind, data = self.items.pop(0)
            return StreamMessage(type=kind, data=data, ts=0, seq=0)

    class Port:
        def _opener(kind):
            @asynccontextmanager
            async def open_stream(self, market):
                yield Stream(frames[kind])

            return open_stream

        orderbook_stream = _opener("book")
        public_trades_stream = _opener("trades")
        mark_price_stream = _opener("mark")
        funding_stream = _opener("funding")

    port = ObservedPort(Port())
    for opener, kind in (
        (port.orderbook_stream, "book"),
        (port.public_trades_stream, "trades"),
        (port.mark_price_stream, "mark"),
        (port.funding_stream, "funding"),
    ):
        async with opener("BTC-USD") as stream:
            for _ in frames[kind]:
                await stream.receive()
    assert port.market_events == {"book_levels": 5 + 2, "trades": 3, "mark": 2, "funding": 1}
    assert port.messages == {"book": 3, "trades": 1, "mark": 2, "funding": 1}
