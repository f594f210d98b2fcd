"""PnL ledger: the decomposition adds up exactly to realised + unrealised PnL."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extmm.domain.pnl import (
    Fill,
    FundingPaid,
    MarketLedger,
    MarkUpdate,
    Portfolio,
    aggregate,
)
from extmm.domain.units import Side

D = Decimal


class AverageCostReference:
    """An independent average-cost book in exact rationals, for comparison."""

    def __init__(self) -> None:
        self.position = Fraction(0)
        self.average = Fraction(0)
        self.realised = Fraction(0)  # trading, fees and funding
        self.mark: Fraction | None = None

    def fill(self, side: Side, price: Decimal, qty: Decimal, fee: Decimal, mid: Decimal | None) -> None:
        price, qty = Fraction(price), Fraction(qty)
        signed = side.sign * qty
        if mid is not None:
            self.mark = Fraction(mid)
        elif self.mark is None:
            self.mark = price
        if self.position == 0 or (self.position > 0) == (signed > 0):
            total = self.position + signed
            self.average = (self.average * abs(self.position) + price * qty) / abs(total)
            self.position = total
        else:
            closing = min(qty, abs(self.position))
            direction = 1 if self.position > 0 else -1
            self.realised += direction * closing * (price - self.average)
            remaining = self.position + signed
            if remaining == 0:
                self.average = Fraction(0)
            elif (remaining > 0) != (self.position > 0):
                self.average = price
            self.position = remaining
        self.realised -= Fraction(fee)

    def funding(self, payment: Decimal) -> None:
        self.realised -= Fraction(payment)

    def unrealised(self) -> Fraction:
        if self.mark is None:
            return Fraction(0)
        return self.position * (self.mark - self.average)


prices = st.integers(min_value=1, max_value=10_000_000).map(lambda n: D(n).scaleb(-2))  # 0.01 .. 100000
quantities = st.integers(min_value=1, max_value=100_000).map(lambda n: D(n).scaleb(-4))
fees = st.integers(min_value=-1000, max_value=5000).map(lambda n: D(n).scaleb(-6))
fills = st.tuples(
    st.just("fill"), st.sampled_from(Side), prices, quantities, fees, st.one_of(st.none(), prices)
)
marks = st.tuples(st.just("mark"), prices)
fundings = st.tuples(st.just("funding"), st.integers(-10_000, 10_000).map(lambda n: D(n).scaleb(-5)))
operations = st.lists(st.one_of(fills, fills, marks, fundings), max_size=60)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_components_sum_exactly_to_realised_plus_unrealised(ops):
    ledger = MarketLedger(market="BTC-USD")
    reference = AverageCostReference()
    for op in ops:
        if op[0] == "fill":
            _, side, price, qty, fee, mid = op
            ledger = ledger.with_fill(side, price, qty, fee=fee, mid=mid)
            reference.fill(side, price, qty, fee, mid)
        elif op[0] == "mark":
            ledger = ledger.with_mark(op[1])
            reference.mark = Fraction(op[1])
        else:
            ledger = ledger.with_funding(op[1])
            reference.funding(op[1])

        components = ledger.spread + ledger.inventory + ledger.fees + ledger.funding
        assert Fraction(components) == reference.realised + reference.unrealised()
        assert components == ledger.total == ledger.equity_change
        assert Fraction(ledger.position) == reference.position
        # The split itself rounds only the average entry price (60 significant digits).
        assert abs(Fraction(ledger.unrealised) - reference.unrealised()) < Fraction(1, 10**40)
        assert ledger.realised + ledger.unrealised == ledger.total


def test_round_trip_by_hand():
    ledger = MarketLedger(market="BTC-USD")
    ledger = ledger.with_fill(Side.BUY, D("100"), D("3"), fee=D("0.01"), mid=D("100.5"))
    ledger = ledger.with_fill(Side.SELL, D("101"), D("1"), fee=D("-0.002"), mid=D("100.7"))
    ledger = ledger.with_mark(D("99")).with_funding(D("0.3"))
    snap = ledger.snapshot()
    assert snap.spread == D("1.8")  # 3·0.5 bought below mid + 1·0.3 sold above it
    assert snap.inventory == D("-2.8")  # 3·(100.7−100.5) + 2·(99−100.7)
    assert snap.fees == D("-0.008")
    assert snap.funding == D("-0.3")
    assert snap.position == D("2")
    assert snap.average_entry == D("100")
    assert snap.unrealised == D("-2")
    assert snap.realised == D("0.692")  # 1·(101−100) − 0.008 − 0.3
    assert snap.total == D("-1.308")
    assert snap.fills == 2 and snap.volume == D("401")


def test_flip_through_zero_takes_the_new_price_as_basis():
    ledger = MarketLedger(market="ETH-USD").with_fill(Side.BUY, D("10"), D("1"))
    ledger = ledger.with_fill(Side.SELL, D("12"), D("3"))
    assert ledger.position == D("-2")
    assert ledger.average_entry == D("12")
    assert ledger.realised == D("2")


def test_flat_ledger_has_no_average_and_rebates_count_as_income():
    ledger = MarketLedger(market="ETH-USD").with_fill(Side.BUY, D("10"), D("1"), fee=D("-0.01"))
    ledger = ledger.with_fill(Side.SELL, D("10"), D("1"), fee=D("-0.01"))
    assert ledger.position == 0 and ledger.average_entry is None
    assert ledger.fees == D("0.02") and ledger.total == D("0.02")


def test_fill_without_mid_uses_last_mark_or_its_own_price():
    first = MarketLedger(market="BTC-USD").with_fill(Side.BUY, D("100"), D("1"))
    assert first.spread == 0 and first.mark == D("100")
    second = first.with_mark(D("102")).with_fill(Side.SELL, D("103"), D("1"))
    assert second.spread == D("1")
    assert second.inventory == D("2")


def test_opening_position_counts_pnl_from_the_opening_mark():
    ledger = MarketLedger.opening("BTC-USD", position=D("0.5"), mark=D("80000"))
    ledger = ledger.with_mark(D("80100"))
    assert ledger.inventory == D("50") == ledger.unrealised == ledger.total
    assert ledger.realised == 0


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"price": 100.5, "qty": D(1)}, TypeError),
        ({"price": D(0), "qty": D(1)}, ValueError),
        ({"price": D(1), "qty": D(-1)}, ValueError),
        ({"price": D("NaN"), "qty": D(1)}, ValueError),
        ({"price": D(1), "qty": D("Infinity")}, ValueError),
    ],
)
def test_bad_fills_are_refused_with_a_clear_error(kwargs, error):
    with pytest.raises(error, match="BTC-USD fill"):
        MarketLedger(market="BTC-USD").with_fill(Side.BUY, **kwargs)


def test_event_for_another_market_is_refused():
    with pytest.raises(ValueError, match="ETH-USD"):
        MarketLedger(market="BTC-USD").apply(MarkUpdate(market="ETH-USD", mid=D(1)))


def test_portfolio_routes_events_and_totals_add_up():
    events = [
        Fill(market="BTC-USD", side=Side.BUY, price=D("100"), qty=D("1"), fee=D("0.1"), mid=D("101")),
        Fill(market="ETH-USD", side=Side.SELL, price=D("10"), qty=D("2"), fee=D("0"), mid=D("9")),
        MarkUpdate(market="BTC-USD", mid=D("103")),
        FundingPaid(market="ETH-USD", payment=D("-0.05")),
    ]
    portfolio = Portfolio()
    for event in events:
        portfolio = portfolio.apply(event)
    totals = portfolio.totals()
    assert [s.market for s in totals.markets] == ["BTC-USD", "ETH-USD"]
    btc, eth = (portfolio.ledger(name) for name in ("BTC-USD", "ETH-USD"))
    assert totals.spread == btc.spread + eth.spread == D("1") + D("2")
    assert totals.funding == D("0.05")
    assert totals.total == btc.total + eth.total == totals.realised + totals.unrealised
    assert totals.total == totals.spread + totals.inventory + totals.fees + totals.funding
    assert totals.fills == 2
    assert aggregate([]).total == 0
