"""Risk rules: each rule on its own, the seed's worked examples, and sizes ≥ min or 0."""

from __future__ import annotations

import math
from decimal import Decimal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from extmm.config import MarketConfig, RiskConfig
from extmm.domain.quoting import QuoteIntent, compute_quote
from extmm.domain.risk import RiskReason, RiskSnapshot, clamp_intent, position_limit_lots
from extmm.markets import bundled_spec

ETH = bundled_spec("ETH-USD")  # lot 0.001, venue min 0.01 ETH
ETH_SMALL_MIN = attrs.evolve(ETH, min_order_size=Decimal("0.001"))
LIMITS = RiskConfig(max_net_position_usd=100.0, max_open_orders=4, min_balance_usd=50.0, stale_book_ms=3000)


def intent(bid_lots: int = 30, ask_lots: int = 30) -> QuoteIntent:
    return QuoteIntent(market="ETH-USD", bid_ticks=19990, bid_lots=bid_lots, ask_ticks=20010, ask_lots=ask_lots)


def snapshot(**overrides) -> RiskSnapshot:
    values = dict(mid=2000.0, position_lots=0, balance_usd=1000.0, book_age_ms=100.0) | overrides
    return RiskSnapshot(**values)


def clamp(quote: QuoteIntent, spec=ETH, limits=LIMITS, **state):
    return clamp_intent(quote, spec=spec, limits=limits, snapshot=snapshot(**state))


def test_within_every_limit_passes_unchanged():
    quote = intent()
    decision = clamp(quote)
    assert decision.intent is quote
    assert decision.reasons == ()
    assert not decision.kill


# -- the seed's worked examples ---------------------------------------------------------


def test_worked_example_eth_quotes_and_position_limit():
    # 1000 USD balance, ETH at 2000, 10 USD per quote, 100 USD limit → 0.005 ETH quotes.
    spec = ETH_SMALL_MIN
    market = MarketConfig(name="ETH-USD", quote_notional_cap_usd=10.0)
    book = dict(best_bid_ticks=19999, best_ask_ticks=20001, mid=2000.0, sigma=1e-4)
    flat = compute_quote(spec=spec, market=market, inventory_lots=0, **book)
    decision = clamp(flat, spec=spec)
    assert spec.lots_to_qty(decision.intent.bid_lots) == Decimal("0.005")
    assert spec.lots_to_qty(decision.intent.ask_lots) == Decimal("0.005")

    # +100 USD long (0.05 ETH): only the sell side quotes. Risk denies the bid even for an
    # intent that still carries one (e.g. computed just before the fill landed) ...
    decision = clamp(flat, spec=spec, position_lots=50)
    assert (decision.intent.bid_lots, decision.intent.ask_lots) == (0, 5)
    # At the limit: the reducing mode (#16) is reported too.
    assert decision.reasons == (RiskReason.REDUCING, RiskReason.POSITION_LIMIT)
    # ... and the full path ends the same way.
    long = compute_quote(spec=spec, market=market, inventory_lots=50, **book)
    decision = clamp(long, spec=spec, position_lots=50)
    assert not decision.intent.has_bid
    assert decision.intent.has_ask


def test_worked_example_limit_converts_at_current_mid():
    assert ETH.lots_to_qty(position_limit_lots(ETH, 100.0, 4000.0)) == Decimal("0.025")
    assert ETH.lots_to_qty(position_limit_lots(ETH, 100.0, 2000.0)) == Decimal("0.050")


# -- net position -----------------------------------------------------------------------


def test_side_is_reduced_to_what_fits():
    # Limit 100 USD; long 30 → a bid may add 20 more (50 lots at the mid 2000; at its own
    # price 1999 as well). The ask fills at 2001, where 50 lots are 100.05 USD: it may go to
    # −49 only (79 lots), so a fill at its own price cannot end past the limit (#16).
    decision = clamp(intent(bid_lots=30, ask_lots=90), position_lots=30)
    assert (decision.intent.bid_lots, decision.intent.ask_lots) == (20, 79)
    assert decision.reasons == (RiskReason.POSITION_LIMIT,)


def test_side_that_fits_only_below_minimum_is_denied():
    # Room for 5 lots but the venue minimum is 10.
    decision = clamp(intent(), position_lots=45)
    assert decision.intent.bid_lots == 0
    assert decision.intent.ask_lots == 30


def test_beyond_the_limit_only_the_reducing_side_quotes():
    decision = clamp(intent(), position_lots=-70, mid=2000.0)  # short 140 USD
    assert decision.intent.bid_lots == 30
    assert decision.intent.ask_lots == 0


def test_limit_follows_the_mid():
    # Same 30-lot long: at 2000 a 20-lot bid fits, at 4000 (limit 25 lots) nothing fits.
    assert clamp(intent(bid_lots=20), position_lots=30, mid=2000.0).intent.bid_lots == 20
    assert clamp(intent(bid_lots=20), position_lots=30, mid=4000.0).intent.bid_lots == 0


# -- open orders ------------------------------------------------------------------------


def test_at_max_open_orders_new_sides_are_denied_live_sides_may_replace():
    decision = clamp(intent(), open_orders=4, live_bid=True, live_ask=False)
    assert decision.intent.bid_lots == 30  # replaces the resting bid: no new order
    assert decision.intent.ask_lots == 0
    assert decision.reasons == (RiskReason.MAX_OPEN_ORDERS,)


def test_last_free_slot_goes_to_the_reducing_side():
    long = clamp(intent(), open_orders=3, position_lots=20)
    assert (long.intent.bid_lots, long.intent.ask_lots) == (0, 30)
    short = clamp(intent(), open_orders=3, position_lots=-20)
    assert (short.intent.bid_lots, short.intent.ask_lots) == (30, 0)
    assert clamp(intent(), open_orders=2).intent == intent()


# -- balance ----------------------------------------------------------------------------


def test_low_balance_flat_denies_both_sides():
    decision = clamp(intent(), balance_usd=49.0)
    assert (decision.intent.bid_lots, decision.intent.ask_lots) == (0, 0)
    assert decision.reasons == (RiskReason.MIN_BALANCE,)


def test_low_balance_keeps_the_reducing_side_without_flipping():
    decision = clamp(intent(bid_lots=30, ask_lots=30), balance_usd=10.0, position_lots=20)
    assert (decision.intent.bid_lots, decision.intent.ask_lots) == (0, 20)
    decision = clamp(intent(bid_lots=15, ask_lots=30), balance_usd=10.0, position_lots=-40)
    assert (decision.intent.bid_lots, decision.intent.ask_lots) == (15, 0)


# -- global guards ----------------------------------------------------------------------


@pytest.mark.parametrize("age", [3000.1, 60_000.0, math.nan, math.inf])
def test_stale_book_denies_both(age):
    decision = clamp(intent(), book_age_ms=age)
    assert (decision.intent.bid_lots, decision.intent.ask_lots) == (0, 0)
    assert decision.reasons == (RiskReason.STALE_BOOK,)
    assert not decision.kill


def test_book_exactly_at_the_threshold_is_fresh():
    assert clamp(intent(), book_age_ms=3000.0).reasons == ()


def test_drawdown_kill_switch():
    limits = attrs.evolve(LIMITS, max_drawdown_usd=250.0)
    below = clamp(intent(), limits=limits, drawdown_usd=249.0)
    assert below.intent == intent() and not below.kill
    hit = clamp(intent(), limits=limits, drawdown_usd=250.0)
    assert (hit.intent.bid_lots, hit.intent.ask_lots) == (0, 0)
    assert hit.kill
    assert hit.reasons == (RiskReason.DRAWDOWN_KILL,)
    # Disabled by default.
    assert not clamp(intent(), drawdown_usd=1e9).kill


def test_global_guards_are_all_reported():
    limits = attrs.evolve(LIMITS, max_drawdown_usd=10.0)
    decision = clamp(intent(), limits=limits, drawdown_usd=20.0, book_age_ms=10_000.0, mid=math.nan)
    assert set(decision.reasons) == {RiskReason.NO_MID, RiskReason.DRAWDOWN_KILL, RiskReason.STALE_BOOK}
    assert (decision.intent.bid_lots, decision.intent.ask_lots) == (0, 0)


def test_config_minimum_is_respected_when_cutting():
    # 20 lots fit, but this market quotes at least 25.
    decision = clamp_intent(
        intent(), spec=ETH, limits=LIMITS, snapshot=snapshot(position_lots=30), min_order_lots=25
    )
    assert decision.intent.bid_lots == 0


# -- property ---------------------------------------------------------------------------


@given(
    bid_lots=st.integers(0, 500),
    ask_lots=st.integers(0, 500),
    position=st.integers(-500, 500),
    mid=st.floats(100, 10_000),
    balance=st.floats(0, 2000),
    open_orders=st.integers(0, 6),
    live_bid=st.booleans(),
    live_ask=st.booleans(),
)
def test_clamped_sizes_respect_limits(bid_lots, ask_lots, position, mid, balance, open_orders, live_bid, live_ask):
    decision = clamp(
        intent(bid_lots, ask_lots), position_lots=position, mid=mid, balance_usd=balance,
        open_orders=open_orders, live_bid=live_bid, live_ask=live_ask,
    )
    out = decision.intent
    limit = position_limit_lots(ETH, LIMITS.max_net_position_usd, mid)
    for before, after in ((bid_lots, out.bid_lots), (ask_lots, out.ask_lots)):
        assert 0 <= after <= before
        assert after == 0 or after >= ETH.min_order_lots
    # A fill never takes the position further beyond the limit than it already was.
    assert out.bid_lots == 0 or position + out.bid_lots <= max(limit, position)
    assert out.ask_lots == 0 or position - out.ask_lots >= min(-limit, position)
    if balance < LIMITS.min_balance_usd:
        assert abs(position + out.bid_lots) <= abs(position)
        assert abs(position - out.ask_lots) <= abs(position)
    new_orders = (out.bid_lots > 0 and not live_bid) + (out.ask_lots > 0 and not live_ask)
    assert new_orders <= max(LIMITS.max_open_orders - open_orders, 0)
    changed = (out.bid_lots, out.ask_lots) != (bid_lots, ask_lots)
    below_min = 0 < bid_lots < ETH.min_order_lots or 0 < ask_lots < ETH.min_order_lots
    # REDUCING reports a state (at or over the limit), not a change.
    cuts = [r for r in decision.reasons if r is not RiskReason.REDUCING]
    assert changed == bool(cuts) or below_min
