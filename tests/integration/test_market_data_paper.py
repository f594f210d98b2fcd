"""Paper trading on live market data (issue 12): `--market-data REST_URL STREAM_URL`.

A second simulator stands in for the venue's public side. It lists a market the bundled
list does not have (SOL-USD); the embedded simulator takes that market and its trading
config from the source's `/info/markets`, shows the bot the source's books, and fills
our orders only when the source's prints reach them (queue model of the replay). Real
sockets; 45 s of trio time at three times the wall clock (`fast_clock`: about 15 s).
"""

from __future__ import annotations

import copy
import time
from decimal import Decimal
from functools import partial

import pytest
import trio

from extmm.commands.run import _market_data_source
from extmm.config import parse_config
from extmm.markets import bundled_markets
from extmm.ops.secrets import load_secrets
from extmm.ops.telemetry import BookStats
from extmm.runtime.app import RunOptions, run_bot
from extmm.runtime.marketdata import MarketDataError, serve_market_data_simulator, source_markets
from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.server import serve_simulator
from extmm.venue.network import NetworkVenue

MARKET = "SOL-USD"


def sol_market() -> dict:
    raw = copy.deepcopy(bundled_markets()["ETH-USD"])
    raw.update(name=MARKET, uiName=MARKET, assetName="SOL", description="Solana")
    raw["l2Config"]["syntheticId"] = "0x534f4c2d3600000000000000000000"
    stats = raw.get("marketStats") or {}
    for key in ("markPrice", "indexPrice", "lastPrice", "bidPrice", "askPrice"):
        stats[key] = "150"
    raw["marketStats"] = stats
    return raw


def test_sol_is_not_bundled():
    assert MARKET not in bundled_markets()


def test_market_data_option_values():
    assert _market_data_source(["testnet"])[0].startswith("https://api.starknet.sepolia")
    assert _market_data_source(["http://127.0.0.1:1/api/v1", "ws://127.0.0.1:1/s"]) == (
        "http://127.0.0.1:1/api/v1", "ws://127.0.0.1:1/s")
    assert _market_data_source(["moon"]) is None
    assert _market_data_source(["ws://x", "http://y"]) is None


async def test_an_unlisted_market_is_a_clear_startup_error():
    async with trio.open_nursery() as nursery:
        source = await nursery.start(partial(serve_simulator, markets=["BTC-USD"], seed=1))
        async with NetworkVenue(source.rest_url, source.stream_url, None) as public:
            with pytest.raises(MarketDataError, match="DOGE-USD not listed"):
                await source_markets(public, ["DOGE-USD"])
        nursery.cancel_scope.cancel()


async def test_paper_session_on_a_second_simulators_data_quotes_an_unbundled_market_and_fills_on_its_prints(
    fast_clock,
):
    now = int(time.time() * 1000)
    source_engine = SimEngine(EngineConfig(seed=8), start_ms=now, markets=[sol_market()])
    cfg = parse_config({
        "quote_loop_ms": 250,
        "replace_coalesce_ms": 200,
        "risk": {"max_net_position_usd": 400, "max_open_orders": 10, "min_balance_usd": 50},
        "markets": [{"name": MARKET, "base_spread": 0.0001, "alpha": 0.1, "quote_notional_cap_usd": 60,
                     "replace_threshold_bps": 1, "min_order_size": 0.01}],
    })
    mids: list[tuple[float, float]] = []
    async with trio.open_nursery() as nursery:
        source = await nursery.start(partial(serve_simulator, engine=source_engine, start_ms=now, seed=8))
        paper = await nursery.start(partial(
            serve_market_data_simulator, source=(source.rest_url, source.stream_url), markets=[MARKET], seed=2))
        assert paper.engine.market_names() == [MARKET]

        async def watch(root) -> None:
            while True:
                await trio.sleep(2.0)
                book = root.view.get(MARKET, BookStats)
                if book is not None and book.mid is not None:
                    mids.append((float(book.mid), source.engine.mid(MARKET)))

        opts = RunOptions(network="custom", rest_url=paper.rest_url, stream_url=paper.stream_url, duration_s=45,
                          dashboard=False, metrics_port=None, watchdog=False, settle_gc=False)
        secrets = _paper_secrets(paper)
        summary = await run_bot(cfg, opts, secrets, on_ready=lambda root: nursery.start_soon(watch, root))
        nursery.cancel_scope.cancel()

    assert summary.open_orders_at_exit == 0
    # The bot saw the source's book: its mid tracks the source simulator's.
    assert mids and all(abs(ours - theirs) / theirs < 0.002 for ours, theirs in mids)
    # It traded, and every fill came from the source's prints (queue or through), none made up.
    account = paper.account.account_id
    fills = paper.engine.trades(account, MARKET)
    assert summary.fills == len(fills) > 0
    assert sum(paper.engine.fills[r] for r in ("queue", "through")) > 0
    prints = source.engine.public_trades(MARKET, limit=1000)
    for fill in fills:
        reached = [
            p for p in prints
            if p.ts <= fill.created_ms + 1000 and p.ts >= fill.created_ms - 5000
            and p.side.value != fill.side.value
            and (p.price >= fill.price if fill.side.value == "SELL" else p.price <= fill.price)
        ]
        assert reached, f"fill {fill.side.value} {fill.qty} @ {fill.price} has no source print that reached it"
    assert Decimal(str(summary.pnl["net"])) == sum(Decimal(str(summary.pnl[k]))
                                                   for k in ("spread", "inventory", "fees", "funding"))


def _paper_secrets(handle):
    import os

    env = {
        "EXTENDED_API_KEY": handle.account.api_key,
        "EXTENDED_STARK_PRIVATE_KEY": handle.account.stark_private_key,
        "EXTENDED_STARK_PUBLIC_KEY": handle.account.stark_public_key,
        "EXTENDED_VAULT_ID": str(handle.account.vault),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return load_secrets(read_env_file=False)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
