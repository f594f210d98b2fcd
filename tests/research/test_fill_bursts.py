"""Latency by default, and the same-side fill-burst counter (issue #15)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import attrs
import orjson
import pytest
from loguru import logger

from extmm.config import load_config
from extmm.research.backtest.metrics import MarketSample
from extmm.research.backtest.observe import ObservedFill
from extmm.research.backtest.options import BacktestOptions
from extmm.research.backtest.quality import fill_bursts, time_at_limit
from extmm.research.backtest.run import backtest
from extmm.research.dataimport.common import market_object
from extmm.sim.recording import RecordingWriter

T0 = 1_790_000_000_000


@pytest.fixture(autouse=True)
def quiet_logs():
    logger.disable("")
    yield
    logger.enable("")


def _fill(ts_ms: int, side: str, order_id: int, market: str = "BTC-USD") -> ObservedFill:
    return ObservedFill(at=0.0, ts_ms=ts_ms, trade_id=ts_ms * 10 + order_id, market=market, side=side,
                        price=Decimal(100), qty=Decimal(1), fee=Decimal(0), is_taker=False,
                        position_after=Decimal(0), order_id=order_id)


def test_fill_bursts_count_other_orders_hit_within_the_window_on_one_side():
    fills = [
        _fill(1000, "BUY", 1),
        _fill(1005, "BUY", 2),  # burst (another order, 5 ms)
        _fill(1005, "BUY", 2),  # the same order again: a partial fill, not a re-quote
        _fill(1020, "BUY", 3),  # 15 ms after the previous: burst, run of 3
        _fill(1021, "SELL", 4),  # the other side: not a burst
        _fill(1100, "BUY", 5),  # 80 ms later: a new run
        _fill(1110, "BUY", 6, market="ETH-USD"),  # another market
        _fill(1115, "BUY", 7),  # 15 ms after 1100: burst, run of 2
    ]
    assert fill_bursts(fills) == {"window_ms": 20, "fills": 3, "bursts": 2, "longest": 3}
    assert fill_bursts(fills, window_ms=1)["fills"] == 0


def test_time_at_limit_is_the_share_of_sampled_time_at_95_percent():
    def s(t: float, usd: float, market: str = "BTC-USD") -> MarketSample:
        return MarketSample(t=t, market=market, mid=1.0, bid=None, ask=None, position=usd,
                            position_usd=usd, pnl={})

    samples = [s(0, 0), s(0, 0, "ETH-USD"), s(1, 195), s(1, 0, "ETH-USD"), s(2, 10), s(2, -190, "ETH-USD"),
               s(4, 0), s(4, 0, "ETH-USD")]
    out = time_at_limit(samples, 200.0)
    assert out == {"threshold_usd": 190.0, "any": 0.75, "by_market": {"BTC-USD": 0.25, "ETH-USD": 0.5}}


def _sweep_recording(path: Path, *, minutes: int = 4) -> Path:
    """A quiet book, and every 20 s an aggressive sweep: 40 prints through 40 levels in 10 ms."""
    header = {"source": "sweep test", "start_ms": T0, "kinds": ["orderbook", "trades"],
              "markets": {"BTC-USD": market_object("BTC-USD", Decimal(1), Decimal("0.00001"))}}
    writer = RecordingWriter(path, header=header)
    seq = {"orderbook": 0, "trades": 0}

    def frame(t: int, kind: str, f: dict) -> None:
        seq[kind] += 1
        writer.write_frame(t, kind, "BTC-USD", orjson.dumps({**f, "ts": t, "seq": seq[kind]}))

    def delta(t: int, bids: list, asks: list) -> None:
        frame(t, "orderbook", {"type": "DELTA", "data": {"t": "DELTA", "m": "BTC-USD", "b": bids, "a": asks}})

    bids = {84_000 - i: "0.01000" for i in range(300)}
    asks = {84_001 + i: "0.01000" for i in range(300)}
    frame(T0, "orderbook", {"type": "SNAPSHOT", "data": {
        "t": "SNAPSHOT", "m": "BTC-USD",
        "b": [{"p": str(p), "q": q} for p, q in sorted(bids.items(), reverse=True)],
        "a": [{"p": str(p), "q": q} for p, q in sorted(asks.items())]}})
    t, k, trade_id = T0, 0, 1
    while t < T0 + minutes * 60_000:
        t += 100
        k += 1
        if k % 200:
            p = max(bids) - 100
            bids[p] = "0.02000" if k % 2 else "0.01000"
            delta(t, [{"p": str(p), "q": "0", "c": bids[p]}], [])
            continue
        sell = (k // 200) % 2 == 1
        for j in range(40):
            t += 1 if j % 4 == 3 else 0
            book = bids if sell else asks
            p = max(book) if sell else min(book)
            del book[p]
            level = [{"p": str(p), "q": "-0.01000", "c": "0"}]
            delta(t, level if sell else [], [] if sell else level)
            frame(t, "trades", {"data": [{"i": trade_id, "m": "BTC-USD", "S": "SELL" if sell else "BUY",
                                          "tT": "TRADE", "T": t, "p": str(p - 1 if sell else p + 1),
                                          "q": "0.50000"}]})
            trade_id += 1
        refill = [min(asks) - 1 - i for i in range(40)] if sell else [max(bids) + 1 + i for i in range(40)]
        for p in refill:
            (bids if sell else asks)[p] = "0.01000"
        levels = [{"p": str(p), "q": "0.01000", "c": "0.01000"} for p in refill]
        t += 1
        delta(t, levels if sell else [], [] if sell else levels)
    writer.close()
    return path


def test_default_latency_removes_the_bursts_zero_latency_produces(tmp_path):
    path = _sweep_recording(tmp_path / "sweep.ndjson.gz")
    cfg = load_config("config/config.json")
    cfg = attrs.evolve(cfg, markets=[m for m in cfg.markets if m.name == "BTC-USD"])
    # Every recorded frame delivered at once (book_interval 0), no latency: the setting.
    zero = backtest(cfg, BacktestOptions(hours=1, replay=(path,), order_latency_ms=0.0, feed_latency_ms=None,
                                         book_interval_s=0.0))
    line = zero.to_json(wall_seconds=1.0)
    assert line["latency_ms"] == {"order": 0.0, "feed": "recorded"}
    assert line["fill_bursts"]["fills"] >= 10 and line["fill_bursts"]["longest"] >= 3
    # The default latencies alone remove them (still every frame delivered)...
    latency_only = backtest(cfg, BacktestOptions(hours=1, replay=(path,), book_interval_s=0.0))
    assert latency_only.to_json(wall_seconds=1.0)["fill_bursts"]["fills"] == 0
    # ...and so do all the defaults (latencies and the venue's 100 ms book cadence).
    default = backtest(cfg, BacktestOptions(hours=1, replay=(path,)))
    line = default.to_json(wall_seconds=1.0)
    assert line["latency_ms"] == {"order": 20.0, "feed": 50.0}
    assert line["fills"] > 0
    assert line["fill_bursts"] == {"window_ms": 20, "fills": 0, "bursts": 0, "longest": 0}
