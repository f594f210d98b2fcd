"""Maker rebates and orders that cannot be built (issue 12, SPEC §4.6, §12 "Fees").

A negative maker rate from `/user/fees` is signed as 0 (the SDK refuses a negative signed
fee) and the rebate is booked as earned fees; an order that cannot be built or signed is a
rejection tracked to a final state, never an actor crash.
"""

from __future__ import annotations

from decimal import Decimal

import trio

from extmm.domain.units import Side
from extmm.sim.inproc import inprocess_simulator
from extmm.sim.launch import SimCredentials
from extmm.venue.endpoints import SigningDomain
from extmm.venue.errors import OrderBuildFailed
from extmm.venue.signing import NonceSource, OrderSigner
from extmm.venue.types import OrderRequest, signed_fee_rate
from tests.botharness import START_MS, running_bot, wait_until


def test_signed_fee_rate_is_never_negative():
    assert signed_fee_rate(Decimal("-0.0001")) == 0
    assert signed_fee_rate(Decimal("0")) == 0
    assert signed_fee_rate(Decimal("0.00025")) == Decimal("0.00025")


def _order(**kw):
    base = dict(market="BTC-USD", side=Side.BUY, qty=Decimal("0.001"), price=Decimal("50000"),
                external_id="extmm-t-BTC-USD-b-000001", expiry_ms=START_MS + 3_600_000,
                max_fee_rate=Decimal("-0.0001"))
    base.update(kw)
    return OrderRequest(**base)


async def test_rebate_rate_is_signed_as_zero_and_accepted_by_the_sim():
    async with inprocess_simulator(
        start_ms=START_MS, markets=["BTC-USD"], verify_signatures=True, maker_fee=Decimal("-0.0001")
    ) as (venue, runner):
        mid = Decimal(str(round(runner.engine.mid("BTC-USD")))) - 500
        placed = await venue.place_order(_order(price=mid))
        state = runner.engine.orders_by_external_id(venue.account_id, placed.external_id)[0]
        assert state.status == "NEW"


async def test_signer_clamps_a_negative_fee():
    async with inprocess_simulator(start_ms=START_MS, markets=["BTC-USD"], verify_signatures=True) as (_, runner):
        engine = runner.engine
        signer = OrderSigner(
            SimCredentials.of(engine.accounts()[0]).credentials(), SigningDomain.of(engine.domain),
            nonces=NonceSource(start=1),
        )
        signer.add_market(engine.market_object("BTC-USD"))
        body = signer.sign(_order())
        assert body["fee"] == "0"
        assert body["debuggingAmounts"]["feeAmount"] == "0"


async def test_an_order_that_cannot_be_signed_is_a_build_failure_not_a_crash():
    async with inprocess_simulator(start_ms=START_MS, markets=["BTC-USD"], verify_signatures=True) as (venue, _):
        try:
            await venue.place_order(_order(time_in_force="BOGUS"))
        except OrderBuildFailed as exc:
            assert exc.placed is False
            assert exc.code == "BUILD_FAILED"
        else:
            raise AssertionError("expected OrderBuildFailed")


async def test_bot_on_a_rebate_account_trades_without_restarts_and_earns_fees(autojump_clock):
    async with running_bot(sim_kw={"maker_fee": Decimal("-0.0001"), "verify_signatures": True}) as bot:
        await trio.sleep(120)
        assert not bot.root.restarts, dict(bot.root.restarts)
    summary = bot.result[0]
    assert summary.fills > 0
    assert summary.pnl["fees"] > 0  # rebates earned, booked as positive fee PnL
    assert summary.open_orders_at_exit == 0
    assert sum(summary.restarts[m][a] for m in summary.restarts for a in summary.restarts[m]) == 0


async def test_executor_tracks_a_build_failure_to_rejected_and_keeps_running(autojump_clock):
    """A port whose signing fails for one side: that order ends REJECTED, no restart."""
    from tests.botharness import test_config

    cfg = test_config(markets=[{"name": "BTC-USD", "base_spread": 0.0002, "quote_notional_cap_usd": 50,
                                "min_order_size": 0.0001}])
    async with running_bot(cfg) as bot:
        original = bot.venue._body  # noqa: SLF001 - inject a signing failure at the build step
        failures = 0

        def failing(order):
            nonlocal failures
            if order.side is Side.SELL:
                failures += 1
                raise ValueError("Fee rate must be non-negative")  # what the SDK says
            return original(order)

        sells_before = {o.external_id for o in bot.venue_open_orders("BTC-USD") if o.side.value == "SELL"}
        bot.venue._body = failing  # noqa: SLF001
        await trio.sleep(30)
        assert failures > 0
        assert not bot.root.restarts
        from extmm.ops.telemetry import ExecStats

        ex = bot.root.view.get("BTC-USD", ExecStats)
        assert dict(ex.reject_reasons).get("BUILD_FAILED", 0) >= failures - 1
        # No sell went out while building failed (one resting from before may stay: a
        # replace that was never sent leaves the old order alone).
        sells = {o.external_id for o in bot.venue_open_orders("BTC-USD") if o.side.value == "SELL"}
        assert sells <= sells_before
        # None of the failed sells lingers as possibly open: each ended REJECTED.
        assert sum(1 for o in ex.open_orders if o.side == "SELL") <= 1
        bot.venue._body = original  # noqa: SLF001
        await wait_until(
            lambda: any(o.side.value == "SELL" for o in bot.venue_open_orders("BTC-USD")), within=60
        )
