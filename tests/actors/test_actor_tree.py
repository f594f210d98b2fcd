"""The supervised actor tree end to end, in virtual time against the simulator.

Kill every actor type mid-run: it restarts after the configured backoff, no order of
ours is left on the simulator untracked, the bot's inventory equals the simulator's
position, and the other market keeps quoting. A market crashing past its restart
intensity is halted with nothing open; a 429 storm trips the breaker.
"""

from __future__ import annotations

import pytest
import trio

from supervisors.events import ChildRestarting, ChildStarted
from supervisors.market import ACTORS
from tests.botharness import running_bot, wait_until


async def settle(bot, seconds: float = 5.0) -> None:
    await trio.sleep(seconds)


def assert_consistent(bot, market: str) -> None:
    """Every open order of ours on the simulator is known to the bot; positions agree."""
    venue_open = {o.external_id for o in bot.venue_open_orders(market)}
    assert venue_open <= bot.tracked_open(market), f"untracked orders on {market}: {venue_open - bot.tracked_open(market)}"
    assert bot.bot_position(market) == bot.venue_position(market)


async def test_bot_quotes_both_markets_and_stops_clean(autojump_clock):
    async with running_bot() as bot:
        await trio.sleep(60)
        for market in ("BTC-USD", "ETH-USD"):
            assert bot.orders_sent(market) > 0
            # Right after a fill a side waits for Risk's next approval, so a market may be
            # momentarily bare: it must be quoting again within a second.
            await wait_until(lambda m=market: bool(bot.venue_open_orders(m)), within=1.0, step=0.05)
            assert_consistent(bot, market)
    summary = bot.result[0]
    assert summary.open_orders_at_exit == 0
    assert bot.venue_open_orders() == []
    assert summary.pnl["net"] == sum(summary.pnl[k] for k in ("spread", "inventory", "fees", "funding"))


@pytest.mark.parametrize("actor", ACTORS)
async def test_killing_an_actor_restarts_it_and_loses_nothing(autojump_clock, actor):
    async with running_bot() as bot:
        await trio.sleep(20)
        events = bot.root.events.subscribe(1024)
        eth_before = bot.orders_sent("ETH-USD")
        killed_at = trio.current_time()
        assert bot.root.kill(f"BTC-USD/{actor}")
        restarting = started = None
        with trio.fail_after(60):
            async for event in events:
                if isinstance(event, ChildRestarting) and event.path == f"BTC-USD/{actor}":
                    restarting = event
                if isinstance(event, ChildStarted) and restarting and event.path == f"BTC-USD/{actor}":
                    started = event
                    break
        # Restarted after the configured backoff (0.5 s with up to 20 % jitter taken off).
        assert 0.4 <= restarting.delay <= 0.5
        assert started.at - killed_at >= restarting.delay
        await settle(bot, 15)
        assert bot.root.restarts[f"BTC-USD/{actor}"] == 1
        for market in ("BTC-USD", "ETH-USD"):
            assert_consistent(bot, market)
        # The other market kept quoting and restarted nothing.
        assert bot.orders_sent("ETH-USD") > eth_before
        assert not [p for p in bot.root.restarts if p.startswith("ETH-USD/")]
        await wait_until(lambda: bool(bot.venue_open_orders("BTC-USD")), within=1.0, step=0.05)


async def test_market_crashing_past_intensity_is_halted_others_keep_trading(autojump_clock):
    async with running_bot() as bot:
        await trio.sleep(20)
        # Crash the quoter again as soon as it is back, until the market escalates
        # (5 restarts within 30 s is the market supervisor's intensity).
        with trio.fail_after(60):
            while "BTC-USD" not in bot.root.halted:
                bot.root.kill("BTC-USD/quoter")
                await trio.sleep(0.2)
        assert "BTC-USD" in bot.root.halted
        eth_before = bot.orders_sent("ETH-USD")
        await trio.sleep(20)
        assert bot.venue_open_orders("BTC-USD") == []
        assert bot.orders_sent("ETH-USD") > eth_before
        await wait_until(lambda: bool(bot.venue_open_orders("ETH-USD")), within=1.0, step=0.05)
        assert bot.root.healthy()  # halted with nothing open counts as safe


async def test_429_storm_trips_breaker_cancels_all_then_resumes(autojump_clock):
    async with running_bot() as bot:
        await trio.sleep(20)
        await wait_until(lambda: bool(bot.venue_open_orders()), within=1.0, step=0.05)
        bot.runner.faults.burst_429(10.0)
        await wait_until(lambda: bot.root.breaker_trips > 0, within=30)
        # Everything is cancelled within a bounded (virtual) time after the trip.
        took = await wait_until(lambda: not bot.venue_open_orders(), within=15)
        assert took < 15
        assert bot.root.breaker.state_name == "OPEN"
        # After the cooldown the breaker half-opens and quoting resumes.
        await wait_until(lambda: bool(bot.venue_open_orders()), within=bot.root.cfg.breaker.cooldown_s + 60, step=0.5)
        assert bot.root.breaker.state_name in ("HALF_OPEN", "CLOSED")
