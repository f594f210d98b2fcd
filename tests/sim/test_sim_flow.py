"""Synthetic market flow: fill intensity A·exp(−kδ), diffusion σ, crowd book, marks, funding."""

from __future__ import annotations

import itertools
import math
import statistics
from decimal import Decimal
from typing import Any

import pytest

from extmm.domain.units import Side
from extmm.markets import bundled_markets
from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.flow import FlowParams
from extmm.sim.model import FundingRateEvent, MarkPriceEvent, TradeEvent

T0 = 1_790_000_000_000
HOUR = 3_600_000
_ids = itertools.count()


def btc_engine(params: FlowParams | None = None, *, seed: int = 3, step_ms: int = 100) -> SimEngine:
    flow = {"BTC-USD": params} if params is not None else {}
    config = EngineConfig(seed=seed, verify_signatures=False, step_ms=step_ms, flow_params=flow)
    return SimEngine(config, start_ms=T0, markets=[bundled_markets()["BTC-USD"]])


def place(engine: SimEngine, account: int, side: str, price: Decimal, qty: Decimal, now: int) -> None:
    engine.place_order(
        account,
        {
            "id": f"o{next(_ids)}",
            "market": "BTC-USD",
            "type": "LIMIT",
            "side": side,
            "qty": str(qty),
            "price": str(price),
            "postOnly": True,
            "timeInForce": "GTT",
            "expiryEpochMillis": T0 + 30 * 24 * HOUR,
            "fee": "0",
            "nonce": "1",
        },
        now,
    )


def test_resting_orders_fill_at_rate_a_exp_minus_k_delta() -> None:
    # No diffusion: fills come from takers only, so a bid δ1 below and an ask δ2 above a
    # fixed mid must fill at A·exp(−k·δ); each is re-placed as soon as it fills.
    params = FlowParams(initial_mid=84000.0, sigma=0.0, taker_rate=2.0, k=0.1, level_size=0.005)
    engine = btc_engine(params, step_ms=10)
    account = engine.create_account(balance=Decimal(10**7)).id
    near, far = 5, 15
    bid, ask = Decimal(84000 - near), Decimal(84000 + far)
    qty = Decimal("0.00100")
    place(engine, account, "BUY", bid, qty, T0)
    place(engine, account, "SELL", ask, qty, T0)
    fills = {"BUY": 0, "SELL": 0}
    duration_s = 1200
    now = T0
    while now < T0 + duration_s * 1000:
        now += 10
        engine.advance(now)
        for event in engine.drain_events():
            if isinstance(event, TradeEvent):
                side = event.trade.side.value
                fills[side] += 1
                place(engine, account, side, bid if side == "BUY" else ask, qty, now)
    rate_near = fills["BUY"] / duration_s
    rate_far = fills["SELL"] / duration_s
    assert rate_near == pytest.approx(params.fill_intensity(near), rel=0.15)
    assert rate_far == pytest.approx(params.fill_intensity(far), rel=0.15)
    k_estimate = math.log(rate_near / rate_far) / (far - near)
    assert k_estimate == pytest.approx(params.k, rel=0.25)


def test_mid_diffuses_with_sigma() -> None:
    params = FlowParams(initial_mid=84000.0, sigma=5.0, taker_rate=0.0, k=0.1, level_size=0.005)
    engine = btc_engine(params)
    mids = [engine.mid("BTC-USD")]
    for step in range(1, 5001):
        engine.advance(T0 + 100 * step)
        mids.append(engine.mid("BTC-USD"))
    increments = [b - a for a, b in itertools.pairwise(mids)]
    variance_per_s = statistics.pvariance(increments) / 0.1
    assert variance_per_s == pytest.approx(params.sigma**2, rel=0.1)
    assert abs(statistics.fmean(increments)) < 3 * params.sigma * math.sqrt(0.1) / math.sqrt(len(increments))


def test_crowd_book_shape_follows_the_params() -> None:
    params = FlowParams.for_market(bundled_markets()["BTC-USD"], depth_levels=300, spread_ticks=3)
    engine = btc_engine(params)
    bids, asks = engine.book_levels("BTC-USD")
    assert len(bids) == len(asks) == 300
    assert asks[0][0] - bids[0][0] == 3
    assert [p for p, _ in bids] == list(range(bids[0][0], bids[0][0] - 300, -1))  # one level per tick
    near = statistics.fmean(q for _, q in bids[:50] + asks[:50])
    far = statistics.fmean(q for _, q in bids[-50:] + asks[-50:])
    assert far > 2 * near  # sizes grow away from the touch
    assert abs((bids[0][0] + asks[0][0]) / 2 - engine.mid("BTC-USD")) <= 2
    assert engine.flow_params("BTC-USD") is params


def test_a_stale_quote_is_filled_when_the_mid_moves_through_it() -> None:
    params = FlowParams(initial_mid=84000.0, sigma=20.0, taker_rate=0.0, k=0.1, level_size=0.005)
    engine = btc_engine(params, seed=5)
    account = engine.create_account().id
    bids, _ = engine.book_levels("BTC-USD", 1)
    price = Decimal(bids[0][0])
    place(engine, account, "BUY", price, Decimal("0.00100"), T0)
    fills = []
    now = T0
    while not fills and now < T0 + 600_000:
        now += 100
        engine.advance(now)
        fills = [e.trade for e in engine.drain_events() if isinstance(e, TradeEvent)]
    assert fills, "the mid never crossed the quote"
    assert not fills[0].is_taker and fills[0].price == price
    assert engine.mid("BTC-USD") < float(price)


def test_a_sensible_quoter_is_filled_a_few_times_a_minute_with_default_params() -> None:
    engine = btc_engine(seed=11)
    spec = engine.market_spec("BTC-USD")
    account = engine.create_account(balance=Decimal(10**6)).id
    fills = 0
    minutes = 10
    for second in range(1, minutes * 60 + 1):
        now = T0 + 1000 * second
        engine.advance(now)
        fills += sum(isinstance(e, TradeEvent) for e in engine.drain_events())
        engine.mass_cancel(account, now, cancel_all=True)
        mid = engine.mid("BTC-USD")
        qty = spec.lots_to_qty(max(spec.float_to_lots(50 / mid), spec.min_order_lots))
        for side, price in ((Side.BUY, mid * (1 - 3e-4)), (Side.SELL, mid * (1 + 3e-4))):
            place(
                engine, account, side.value, spec.ticks_to_price(spec.float_to_ticks(price, side)), qty, now
            )
    per_minute = fills / minutes
    assert 1.5 <= per_minute <= 15


def test_marks_and_funding_are_published_and_applied() -> None:
    engine = btc_engine()
    account = engine.create_account().id
    ask = engine.book_levels("BTC-USD", 1)[1][0][0]
    engine.place_order(
        account,
        {
            "id": "take",
            "market": "BTC-USD",
            "type": "LIMIT",
            "side": "BUY",
            "qty": "0.01000",
            "price": str(ask + 50),
            "timeInForce": "IOC",
            "expiryEpochMillis": T0 + HOUR,
            "fee": "0.00025",
            "nonce": "7",
        },
        T0 + 1,
    )
    assert engine.positions(account)[0].side == "LONG"
    engine.drain_events()
    boundary = (T0 // HOUR + 1) * HOUR
    events: list[Any] = []
    now = T0 + 1
    while now < boundary + 10_000:
        now = min(now + 60_000, boundary + 10_000)
        engine.advance(now)
        events.extend(engine.drain_events())
    marks = [e for e in events if isinstance(e, MarkPriceEvent)]
    assert len(marks) == (boundary + 10_000) // 1000 - T0 // 1000  # one a second
    assert all(e.ts % 1000 == 0 for e in marks)
    applied = [e for e in events if isinstance(e, FundingRateEvent) and e.applied]
    estimates = [e for e in events if isinstance(e, FundingRateEvent) and not e.applied]
    assert [e.ts for e in applied] == [boundary]
    assert len(estimates) == (boundary + 10_000) // 60_000 - T0 // 60_000  # one a minute
    assert all(abs(e.rate) < Decimal("0.001") for e in estimates)
    [payment] = engine.funding_payments(account)
    assert payment.paid_ms == boundary and payment.funding_rate == applied[0].rate
    expected = Decimal("0.01000") * payment.mark_price * payment.funding_rate
    assert abs(payment.funding_fee - expected) <= Decimal("0.000001")
    mark = float(engine.mark_price("BTC-USD"))
    assert abs(mark / engine.mid("BTC-USD") - 1) < 5e-4


def test_flow_is_deterministic_for_a_seed() -> None:
    def mids(seed: int) -> list[float]:
        engine = btc_engine(seed=seed)
        out = []
        for step in range(1, 200):
            engine.advance(T0 + 100 * step)
            out.append(engine.mid("BTC-USD"))
        return out

    assert mids(1) == mids(1)
    assert mids(1) != mids(2)


def test_deltas_track_the_book_through_heavy_churn() -> None:
    engine = btc_engine(seed=9)
    engine.drain_book_changes()
    snapshot = engine.book_snapshot("BTC-USD")
    bids = {level.price: level.qty for level in snapshot.bids}
    asks = {level.price: level.qty for level in snapshot.asks}
    for step in range(1, 301):
        engine.advance(T0 + 100 * step)
        for delta in engine.drain_book_changes():
            for side, changes in ((bids, delta.bids), (asks, delta.asks)):
                for change in changes:
                    assert side.get(change.price, Decimal(0)) + change.delta == change.qty
                    if change.qty:
                        side[change.price] = change.qty
                    else:
                        del side[change.price]
    final = engine.book_snapshot("BTC-USD")
    assert bids == {level.price: level.qty for level in final.bids}
    assert asks == {level.price: level.qty for level in final.asks}
