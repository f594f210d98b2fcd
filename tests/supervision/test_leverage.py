"""Leverage per market and margin (issue 12; SPEC §4.2, §4.7, error 1140), against the simulator."""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio

from extmm.domain.units import Side
from extmm.ops.telemetry import ExecStats
from extmm.sim.inproc import inprocess_simulator
from extmm.venue.errors import OrderRejected
from extmm.venue.leverage import LeverageError, align_leverage, margin_need
from extmm.venue.types import OrderRequest
from supervisors.root import StartupError
from tests.botharness import START_MS, running_bot
from tests.botharness import test_config as make_config


def _bid(runner, *, qty: str, ext: str, below: int = 300) -> OrderRequest:
    price = Decimal(int(runner.engine.mid("BTC-USD")) - below)
    return OrderRequest(market="BTC-USD", side=Side.BUY, qty=Decimal(qty), price=price, external_id=ext,
                        expiry_ms=START_MS + 3_600_000, max_fee_rate=Decimal(0))


class Spy:
    """A port that records leverage writes on top of the in-process venue."""

    def __init__(self, venue):
        self.venue = venue
        self.sets: list[tuple[str, Decimal]] = []

    async def get_leverage(self, markets):
        return await self.venue.get_leverage(markets)

    async def set_leverage(self, market, leverage):
        self.sets.append((market, leverage))
        await self.venue.set_leverage(market, leverage)


async def test_leverage_is_set_when_configured_and_different_and_kept_otherwise():
    async with inprocess_simulator(start_ms=START_MS, markets=["BTC-USD", "ETH-USD"]) as (venue, _):
        spy = Spy(venue)
        statuses = await align_leverage(spy, {"BTC-USD": 5, "ETH-USD": None})
        assert spy.sets == [("BTC-USD", Decimal(5))]
        assert [(s.market, s.leverage, s.changed) for s in statuses] == [
            ("BTC-USD", Decimal(5), True), ("ETH-USD", Decimal(10), False)]
        assert (await venue.get_leverage(["BTC-USD"]))["BTC-USD"] == 5
        again = await align_leverage(spy, {"BTC-USD": 5})
        assert spy.sets == [("BTC-USD", Decimal(5))]  # already 5: kept, no second PATCH
        assert not again[0].changed


async def test_leverage_outside_the_market_range_is_refused_and_reported():
    async with inprocess_simulator(start_ms=START_MS, markets=["BTC-USD"]) as (venue, _):
        with pytest.raises(LeverageError, match="BTC-USD.*1049"):
            await align_leverage(venue, {"BTC-USD": 500})


async def test_orders_beyond_the_margin_are_rejected_1140_until_leverage_allows_them():
    async with inprocess_simulator(start_ms=START_MS, markets=["BTC-USD"], balance=100) as (venue, runner):
        await venue.set_leverage("BTC-USD", Decimal(1))
        big = "0.005"  # ≈ $500 notional: 5× the $100 balance
        with pytest.raises(OrderRejected) as refused:
            await venue.place_order(_bid(runner, qty=big, ext="lev-1"))
        assert refused.value.code == 1140
        await venue.set_leverage("BTC-USD", Decimal(10))
        await venue.place_order(_bid(runner, qty=big, ext="lev-2"))
        assert [o.external_id for o in await venue.get_open_orders("BTC-USD")] == ["lev-2"]
        # Lowering leverage under the resting order's margin is refused (margin short).
        with pytest.raises(OrderRejected) as short:
            await venue.set_leverage("BTC-USD", Decimal(1))
        assert short.value.code == 1051
        assert (await venue.get_leverage(["BTC-USD"]))["BTC-USD"] == 10


async def test_bot_sets_configured_leverage_at_start(autojump_clock):
    cfg = make_config(markets=[
        {"name": "BTC-USD", "leverage": 3, "base_spread": 0.0002, "min_order_size": 0.0001},
        {"name": "ETH-USD", "base_spread": 0.0002, "min_order_size": 0.01},
    ])
    async with running_bot(cfg) as bot:
        await trio.sleep(5)
        rows = dict(bot.engine.leverage(bot.account_id))
        assert rows["BTC-USD"] == 3 and rows["ETH-USD"] == 10
        assert bot.root.leverage == {"BTC-USD": Decimal(3), "ETH-USD": Decimal(10)}


async def test_bot_refuses_to_start_when_leverage_cannot_be_set(autojump_clock):
    cfg = make_config(markets=[{"name": "BTC-USD", "leverage": 500, "min_order_size": 0.0001}])
    caught: list[BaseException] = []
    try:
        async with running_bot(cfg):
            raise AssertionError("the bot started")
    except* StartupError as group:
        caught.extend(_leaves(group))
    assert len(caught) == 1 and "leverage 500" in str(caught[0]) and "1049" in str(caught[0])


async def test_bot_short_of_margin_gets_1140_rejections_tracked_without_restarts(autojump_clock):
    cfg = make_config(
        markets=[{"name": "BTC-USD", "leverage": 1, "base_spread": 0.0002, "min_order_size": 0.0001,
                  "quote_notional_cap_usd": 400}],
        risk={"max_net_position_usd": 1000, "max_open_orders": 10, "min_balance_usd": 50},
    )
    async with running_bot(cfg, sim_kw={"balance": 300}) as bot:
        await trio.sleep(30)
        ex = bot.root.view.get("BTC-USD", ExecStats)
        reasons = dict(ex.reject_reasons)
        assert reasons.get("1140", 0) > 0, reasons
        assert not bot.root.restarts
        # Every 1140 ended the order: what the bot may think open is what the venue has open.
        assert {o.external_id for o in bot.venue_open_orders("BTC-USD")} <= bot.tracked_open("BTC-USD")


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def test_margin_need_is_position_plus_quote_over_leverage():
    assert margin_need(leverage=Decimal(5), max_net_position_usd=200, quote_notional_usd=50) == Decimal("50.00")


async def test_check_reports_leverage_and_flags_margin_the_balance_cannot_cover():
    from extmm.commands._online_checks import run_network_checks
    from extmm.commands._venue_target import VenueTarget
    from extmm.ops.secrets import SecretsError

    covered = make_config(markets=[{"name": "BTC-USD", "leverage": 5, "min_order_size": 0.0001}])
    results = await run_network_checks(covered, VenueTarget(network="paper"), SecretsError(["unused"]))
    lines = {r.name: r for r in results}
    assert lines["leverage BTC-USD"].passed and "5× configured" in lines["leverage BTC-USD"].detail
    assert "$50.00" in lines["leverage BTC-USD"].detail  # ($200 + $50) / 5
    assert lines["margin"].passed

    short = make_config(
        markets=[{"name": "BTC-USD", "leverage": 1, "min_order_size": 0.0001}],
        risk={"max_net_position_usd": 50_000, "max_open_orders": 10, "min_balance_usd": 50},
    )
    results = await run_network_checks(short, VenueTarget(network="paper"), SecretsError(["unused"]))
    margin = {r.name: r for r in results}["margin"]
    assert margin.passed is False and "1140" in margin.detail
