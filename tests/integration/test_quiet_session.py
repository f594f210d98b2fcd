"""A calm paper session on the faithful simulator shows no stream reconnects (issue 12).

The simulator now behaves like the venue where it matters for liveness: funding frames at
most one a minute, an account stream that is silent while nothing of the account changes
(quotes far from the touch: no fills, few replaces), WebSocket pings every 15 s. Under the
old 30 s data-stall timer the account and funding streams were torn down twice a minute
and Risk pulled the quotes each time; now every topic counts zero reconnects and no quote
is pulled. Real sockets; the default test runs 45 s of trio time at three times the wall
clock (`fast_clock`, 15 s), the slow variant 4 minutes of real time.
"""

from __future__ import annotations

import pytest
import trio

from extmm.config import parse_config
from extmm.ops.metrics import Metrics
from extmm.ops.secrets import load_secrets
from extmm.ops.telemetry import ExecStats
from extmm.runtime.app import RunOptions, run_bot

FAR = {
    "quote_loop_ms": 250,
    "dead_mans_switch_sec": 60,
    "risk": {"max_net_position_usd": 200, "max_open_orders": 10, "min_balance_usd": 50},
    "markets": [
        {"name": "BTC-USD", "base_spread": 0.01, "alpha": 0.0, "beta": 0.0, "quote_notional_cap_usd": 50,
         "replace_threshold_bps": 60, "min_order_size": 0.0001},
    ],
}


async def quiet_session(seconds: float) -> tuple[object, dict, ExecStats, str]:
    """Run `seconds` of a calm session; the bot's view is taken just before the stop (the
    shutdown itself cancels our quotes, which is not a pull)."""
    cfg = parse_config(FAR)
    stop = trio.Event()
    seen: dict = {}

    async def observe(root) -> None:
        await trio.sleep(seconds)
        seen["reconnects"] = root.reconnect_counts()
        seen["exec"] = root.view.get("BTC-USD", ExecStats)
        metrics = Metrics(process_metrics=False)
        metrics.update(root.status())
        seen["exposition"] = metrics.exposition().decode()
        stop.set()

    opts = RunOptions(network="paper", seed=4, dashboard=False, metrics_port=None, watchdog=False, settle_gc=False)
    async with trio.open_nursery() as nursery:
        summary = await run_bot(cfg, opts, load_secrets(read_env_file=False), stop=stop,
                                on_ready=lambda root: nursery.start_soon(observe, root))
    return summary, seen["reconnects"], seen["exec"], seen["exposition"]


def assert_quiet(summary, reconnects, ex, exposition) -> None:
    zeros = {"BTC-USD": {"orderbook": 0, "trades": 0, "funding": 0, "mark": 0, "account": 0}}
    assert summary.fills == 0  # far from the touch: the account stream had nothing to say
    assert reconnects == zeros
    assert summary.stream_reconnects == zeros  # shutdown included
    assert summary.to_json()["stream_reconnects"] == zeros
    assert ex.orders_sent >= 2 and ex.cancels == 0  # quoting all along, no quote ever pulled
    assert 'extmm_stream_reconnects_total{market="BTC-USD",topic="account"} 0.0' in exposition


async def test_calm_paper_session_longer_than_the_old_stall_limit_has_no_reconnects(fast_clock):
    assert_quiet(*await quiet_session(45.0))


@pytest.mark.slow
async def test_calm_paper_session_of_four_minutes_has_no_reconnects():
    """Real time (the default test above covers the same in trio time at 3x)."""
    assert_quiet(*await quiet_session(240.0))


async def test_reconnects_are_counted_per_topic(autojump_clock):
    """Dropping every connection shows up under each topic, the shared account stream included."""
    from tests.botharness import running_bot

    async with running_bot() as bot:
        await trio.sleep(10)
        bot.runner.drop_connections()
        await trio.sleep(10)
        counts = bot.root.reconnect_counts()
    for market in ("BTC-USD", "ETH-USD"):
        assert counts[market]["orderbook"] >= 1
        assert counts[market]["funding"] >= 1 and counts[market]["mark"] >= 1
        assert counts[market]["account"] >= 1
        assert counts[market]["trades"] == 0  # not subscribed (no online recalibration)
