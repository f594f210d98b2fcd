"""Simulated accounts: collateral, positions with an exact cost basis, fees, funding, margin.

Money is kept as `Fraction`, so realised PnL on partial closes, fees and funding add up
exactly: equity − deposits == realised + unrealised − fees − funding, with no rounding
drift. Fees and funding payments are rounded to the collateral's 6 decimals as they are
charged (fees up, funding half-even), like the venue's integer collateral amounts.
Decimals appear only in the snapshots handed out (`PositionState`, `BalanceState`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction

import attrs

from extmm.domain.units import MarketSpec
from extmm.sim.model import (
    AccountInfo,
    BalanceState,
    Fill,
    FundingPaymentRecord,
    Ledger,
    PositionState,
    SimOrder,
)

MICRO = Fraction(1, 1_000_000)


def fee_amount(rate: Fraction, notional: Fraction) -> Fraction:
    """Fee on a fill, rounded up to the collateral resolution (1e-6 USD)."""
    return Fraction(math.ceil(rate * notional / MICRO)) * MICRO


def funding_amount(signed_value: Fraction, rate: Fraction) -> Fraction:
    """Funding paid by a position (negative: received), rounded half-even to 1e-6 USD."""
    return Fraction(round(signed_value * rate / MICRO)) * MICRO


def to_decimal(value: Fraction, places: int = 6) -> Decimal:
    """Round a rational to `places` decimals (half-even) as a Decimal with that exponent."""
    scaled = round(value * 10**places)
    quantum = Decimal(1).scaleb(-places)
    return Decimal(scaled).scaleb(-places).quantize(quantum)


def to_plain_decimal(value: Fraction, places: int = 8) -> Decimal:
    """Like `to_decimal` but without trailing zeros ("84000.5", never "8.4E+4")."""
    text = str(to_decimal(value, places))
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return Decimal(text)


@attrs.frozen(kw_only=True)
class MarketTerms:
    """Per-market numbers the ledger needs: the grid as fractions and margin tiers."""

    spec: MarketSpec
    tick: Fraction
    lot: Fraction
    risk_tiers: tuple[tuple[Fraction, Fraction], ...]  # (upper bound of |value|, risk factor)
    unit_float: float  # tick × lot, for quick margin estimates only
    lot_float: float

    @classmethod
    def from_spec(cls, spec: MarketSpec, risk_config: list[Mapping[str, str]] | None = None) -> MarketTerms:
        tiers = tuple(
            (Fraction(Decimal(str(t["upperBound"]))), Fraction(Decimal(str(t["riskFactor"]))))
            for t in (risk_config or [])
        )
        return cls(
            spec=spec,
            tick=Fraction(spec.tick_size),
            lot=Fraction(spec.lot_size),
            risk_tiers=tiers,
            unit_float=float(spec.tick_size * spec.lot_size),
            lot_float=float(spec.lot_size),
        )

    def risk_factor(self, abs_value: Fraction) -> Fraction:
        for upper, factor in self.risk_tiers:
            if abs_value <= upper:
                return factor
        return self.risk_tiers[-1][1] if self.risk_tiers else Fraction(1, 50)


class Position:
    """One market's position of one account; `cost` is the signed entry notional."""

    __slots__ = (
        "id",
        "market",
        "lots",
        "cost",
        "realised",
        "fees",
        "funding",
        "created_ms",
        "updated_ms",
        "side",
    )

    def __init__(self, market: str) -> None:
        self.id = 0
        self.market = market
        self.lots = 0
        self.cost = Fraction(0)
        # PnL of the current position's lifetime (reset when it opens from flat).
        self.realised = Fraction(0)
        self.fees = Fraction(0)
        self.funding = Fraction(0)
        self.created_ms = 0
        self.updated_ms = 0
        self.side = "LONG"

    def unrealised(self, lot: Fraction, mark: Fraction) -> Fraction:
        return self.lots * lot * mark - self.cost

    def signed_value(self, lot: Fraction, mark: Fraction) -> Fraction:
        return self.lots * lot * mark


class AccountState:
    """Mutable state of one account; the engine is its only writer."""

    def __init__(self, info: AccountInfo, *, history_limit: int, created_ms: int) -> None:
        self.info = info
        self.created_ms = created_ms
        self.updated_ms = created_ms
        self.deposits = Fraction(0)
        self.balance = Fraction(0)
        self.realised = Fraction(0)
        self.fees = Fraction(0)
        self.funding = Fraction(0)
        self.positions: dict[str, Position] = {}
        self.leverage: dict[str, Decimal] = {}
        self.fee_overrides: dict[str, tuple[Decimal, Decimal]] = {}
        self.open_orders: dict[int, SimOrder] = {}
        self.orders_by_id: dict[int, SimOrder] = {}
        self.orders_by_external: dict[str, list[SimOrder]] = {}
        self.open_by_external: dict[str, SimOrder] = {}
        self.closed_orders: deque[SimOrder] = deque(maxlen=history_limit)
        self.trades: deque[Fill] = deque(maxlen=history_limit)
        self.funding_history: deque[FundingPaymentRecord] = deque(maxlen=history_limit)
        # market -> [open buy ticks*lots, open sell ticks*lots, open order count]
        self.open_book: dict[str, list[int]] = {}
        self.dms_deadline_ms: int | None = None

    # -- open orders ------------------------------------------------------------------
    def open_count(self, market: str) -> int:
        book = self.open_book.get(market)
        return book[2] if book else 0

    def track_open(self, order: SimOrder) -> None:
        book = self.open_book.setdefault(order.market, [0, 0, 0])
        book[0 if order.side.sign > 0 else 1] += order.price_ticks * order.remaining_lots
        book[2] += 1
        self.open_orders[order.id] = order
        self.open_by_external[order.external_id] = order

    def untrack_lots(self, order: SimOrder, lots: int) -> None:
        """`lots` of an open order stopped resting (filled or cancelled)."""
        book = self.open_book[order.market]
        book[0 if order.side.sign > 0 else 1] -= order.price_ticks * lots

    def close_order(self, order: SimOrder) -> None:
        """The order left the open set (its remaining lots were untracked already)."""
        if self.open_orders.pop(order.id, None) is not None:
            self.open_book[order.market][2] -= 1
            if self.open_by_external.get(order.external_id) is order:
                del self.open_by_external[order.external_id]
        self.closed_orders.append(order)

    def remember(self, order: SimOrder) -> None:
        self.orders_by_id[order.id] = order
        self.orders_by_external.setdefault(order.external_id, []).append(order)

    # -- money -------------------------------------------------------------------------
    def deposit(self, amount: Fraction, now_ms: int) -> None:
        self.deposits += amount
        self.balance += amount
        self.updated_ms = now_ms

    def position(self, market: str) -> Position:
        position = self.positions.get(market)
        if position is None:
            position = self.positions[market] = Position(market)
        return position

    def apply_fill(
        self,
        terms: MarketTerms,
        *,
        side_sign: int,
        lots: int,
        ticks: int,
        fee: Fraction,
        now_ms: int,
        new_id: int,
    ) -> Position:
        """Book a fill: realise PnL on the closed part, re-base the rest, charge the fee.

        `new_id` is used when the fill opens a position from flat (or flips it).
        """
        position = self.position(terms.spec.name)
        price = ticks * terms.tick
        signed_lots = side_sign * lots
        closing = 0
        if position.lots and (position.lots > 0) != (signed_lots > 0):
            closing = min(lots, abs(position.lots))
            held = abs(position.lots)
            cost_share = position.cost * closing / held
            direction = 1 if position.lots > 0 else -1
            realised = direction * closing * terms.lot * price - cost_share
            position.cost -= cost_share
            position.lots += side_sign * closing
            position.realised += realised
            self.realised += realised
            self.balance += realised
        opening = lots - closing
        if opening:
            if position.lots == 0:
                position.id = new_id
                position.created_ms = now_ms
                position.realised = Fraction(0)
                position.fees = Fraction(0)
                position.funding = Fraction(0)
            position.lots += side_sign * opening
            position.cost += side_sign * opening * terms.lot * price
        if position.lots == 0:
            position.cost = Fraction(0)
        if position.lots:
            position.side = "LONG" if position.lots > 0 else "SHORT"
        position.fees += fee
        self.fees += fee
        self.balance -= fee
        position.updated_ms = now_ms
        self.updated_ms = now_ms
        return position

    def pay_funding(self, position: Position, amount: Fraction, now_ms: int) -> None:
        position.funding += amount
        position.updated_ms = now_ms
        self.funding += amount
        self.balance -= amount
        self.updated_ms = now_ms

    # -- snapshots -----------------------------------------------------------------------
    def unrealised(self, terms: Mapping[str, MarketTerms], marks: Mapping[str, Fraction]) -> Fraction:
        total = Fraction(0)
        for market, position in self.positions.items():
            if position.lots:
                total += position.unrealised(terms[market].lot, marks[market])
        return total

    def ledger(self, terms: Mapping[str, MarketTerms], marks: Mapping[str, Fraction]) -> Ledger:
        return Ledger(
            deposits=self.deposits,
            balance=self.balance,
            realised_pnl=self.realised,
            unrealised_pnl=self.unrealised(terms, marks),
            fees_paid=self.fees,
            funding_paid=self.funding,
        )

    def leverage_for(self, market: str, default: Decimal) -> Decimal:
        return self.leverage.get(market, default)

    def initial_margin(
        self,
        terms: Mapping[str, MarketTerms],
        marks: Mapping[str, Fraction],
        default_leverage: Decimal,
        extra: list[tuple[str, int, int]] | None = None,
    ) -> Fraction:
        """SPEC §4.2: per market max(|pos + buys|, |pos − sells|) / leverage, summed.

        `extra` holds prospective changes `(market, side sign, ticks*lots)` (negative
        units take an order away), e.g. a new order and the one it replaces.
        """
        open_units = {market: [book[0], book[1]] for market, book in self.open_book.items()}
        for market, sign, units in extra or ():
            open_units.setdefault(market, [0, 0])[0 if sign > 0 else 1] += units
        markets = set(open_units) | {m for m, p in self.positions.items() if p.lots}
        total = Fraction(0)
        for market in markets:
            t = terms[market]
            unit = t.tick * t.lot
            buys, sells = open_units.get(market, (0, 0))
            position = self.positions.get(market)
            value = position.signed_value(t.lot, marks[market]) if position and position.lots else Fraction(0)
            need = max(abs(value + buys * unit), abs(value - sells * unit))
            total += need / Fraction(self.leverage_for(market, default_leverage))
        return total

    def margin_estimate(
        self,
        terms: Mapping[str, MarketTerms],
        marks: Mapping[str, float],
        default_leverage: Decimal,
        extra: list[tuple[str, int, int]] | None = None,
    ) -> tuple[float, float]:
        """(initial margin, equity) in floats: a quick screen before the exact check."""
        open_units = {market: [book[0], book[1]] for market, book in self.open_book.items()}
        for market, sign, units in extra or ():
            open_units.setdefault(market, [0, 0])[0 if sign > 0 else 1] += units
        equity = float(self.balance)
        values: dict[str, float] = {}
        for market, position in self.positions.items():
            if position.lots:
                value = position.lots * terms[market].lot_float * marks[market]
                values[market] = value
                equity += value - float(position.cost)
        initial = 0.0
        for market in set(open_units) | set(values):
            unit = terms[market].unit_float
            buys, sells = open_units.get(market, (0, 0))
            value = values.get(market, 0.0)
            need = max(abs(value + buys * unit), abs(value - sells * unit))
            initial += need / float(self.leverage_for(market, default_leverage))
        return initial, equity

    def position_state(self, terms: MarketTerms, mark: Fraction, default_leverage: Decimal) -> PositionState:
        market = terms.spec.name
        position = self.positions[market]
        size = abs(position.lots)
        open_price = abs(position.cost) / (size * terms.lot) if size else Fraction(0)
        return PositionState(
            id=position.id,
            account_id=self.info.id,
            market=market,
            status="OPENED" if size else "CLOSED",
            side=position.side,
            leverage=self.leverage_for(market, default_leverage),
            size=terms.spec.lots_to_qty(size),
            value=to_decimal(abs(position.signed_value(terms.lot, mark))),
            open_price=to_plain_decimal(open_price) if size else Decimal(0),
            mark_price=to_plain_decimal(mark),
            unrealised_pnl=to_decimal(position.unrealised(terms.lot, mark) if size else Fraction(0)),
            realised_pnl=to_decimal(position.realised - position.fees - position.funding),
            created_ms=position.created_ms,
            updated_ms=position.updated_ms,
        )

    def balance_state(
        self,
        terms: Mapping[str, MarketTerms],
        marks: Mapping[str, Fraction],
        default_leverage: Decimal,
        now_ms: int,
    ) -> BalanceState:
        unrealised = self.unrealised(terms, marks)
        equity = self.balance + unrealised
        initial = self.initial_margin(terms, marks, default_leverage)
        exposure = Fraction(0)
        maintenance = Fraction(0)
        for market, position in self.positions.items():
            if position.lots:
                value = abs(position.signed_value(terms[market].lot, marks[market]))
                exposure += value
                maintenance += value * terms[market].risk_factor(value)
        available = equity - initial
        return BalanceState(
            collateral_name="USD",
            balance=to_decimal(self.balance),
            equity=to_decimal(equity),
            available_for_trade=to_decimal(available),
            available_for_withdrawal=to_decimal(max(available, Fraction(0))),
            unrealised_pnl=to_decimal(unrealised),
            initial_margin=to_decimal(initial),
            margin_ratio=to_decimal(maintenance / equity, 4) if equity > 0 else Decimal(0),
            exposure=to_decimal(exposure),
            leverage=to_decimal(exposure / equity, 4) if equity > 0 else Decimal(0),
            updated_ms=now_ms,
        )
