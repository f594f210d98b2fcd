"""PnL ledger: per-market spread, inventory, fees and funding, added up exactly.

Fills, mid updates and funding payments fold into an immutable `MarketLedger`. The four
components sum exactly (Decimal, inexact results trapped) to the equity change
cash + position·mark − fees paid − funding paid, i.e. realised + unrealised PnL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from types import MappingProxyType

import attrs

from extmm.domain.units import Side

# Sums and products of the venue's decimal strings need far fewer digits than this; the
# Inexact trap turns any silent rounding into an error instead of a broken identity.
_EXACT = Context(
    prec=200,
    rounding=ROUND_HALF_EVEN,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[Inexact, InvalidOperation, DivisionByZero, Overflow],
)
# Average-cost bookkeeping divides, so the average entry price alone is rounded (to 60
# significant digits); the components and the equity change stay exact.
_AVERAGING = Context(prec=60, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow])

ZERO = Decimal(0)


def _decimal(value: Decimal | int, what: str, *, positive: bool = False) -> Decimal:
    """Accept Decimal or int only: a float here would smuggle binary rounding into PnL."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{what}: expected a Decimal or int, got {type(value).__name__} {value!r}")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{what}: expected a finite number, got {number}")
    if positive and number <= 0:
        raise ValueError(f"{what}: expected a number > 0, got {number}")
    return number


# -- events ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Fill:
    """One of our fills. `fee` is what we paid (negative = rebate); `mid` is the mid at the
    moment of the fill (None → the last known mark, or the fill price if there is none)."""

    market: str
    side: Side
    price: Decimal
    qty: Decimal
    fee: Decimal = ZERO
    mid: Decimal | None = None


@attrs.frozen(kw_only=True)
class MarkUpdate:
    """A new mid (or mark) price to value the position at."""

    market: str
    mid: Decimal


@attrs.frozen(kw_only=True)
class FundingPaid:
    """A funding payment as the venue reports it: positive = we paid, negative = we received."""

    market: str
    payment: Decimal


PnlEvent = Fill | MarkUpdate | FundingPaid


# -- snapshots ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class PnlSnapshot:
    """One market's PnL for the dashboard and the exit summary (all in quote currency).

    spread + inventory + fees + funding == total == realised + unrealised. `fees` and
    `funding` are PnL contributions (negative when paid). `average_entry` is None when flat.
    """

    market: str
    position: Decimal
    mark: Decimal | None
    average_entry: Decimal | None
    spread: Decimal
    inventory: Decimal
    fees: Decimal
    funding: Decimal
    realised: Decimal
    unrealised: Decimal
    total: Decimal
    fills: int
    volume: Decimal  # traded notional, Σ price·qty


@attrs.frozen(kw_only=True)
class PnlTotals:
    """PnL summed over markets (positions are per market and do not add up)."""

    spread: Decimal
    inventory: Decimal
    fees: Decimal
    funding: Decimal
    realised: Decimal
    unrealised: Decimal
    total: Decimal
    fills: int
    volume: Decimal
    markets: tuple[PnlSnapshot, ...]


def aggregate(snapshots: Iterable[PnlSnapshot]) -> PnlTotals:
    """Exact totals across markets, markets listed in name order."""
    ordered = tuple(sorted(snapshots, key=lambda s: s.market))
    with localcontext(_EXACT):
        return PnlTotals(
            spread=sum((s.spread for s in ordered), ZERO),
            inventory=sum((s.inventory for s in ordered), ZERO),
            fees=sum((s.fees for s in ordered), ZERO),
            funding=sum((s.funding for s in ordered), ZERO),
            realised=sum((s.realised for s in ordered), ZERO),
            unrealised=sum((s.unrealised for s in ordered), ZERO),
            total=sum((s.total for s in ordered), ZERO),
            fills=sum(s.fills for s in ordered),
            volume=sum((s.volume for s in ordered), ZERO),
            markets=ordered,
        )


# -- one market --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class MarketLedger:
    """Immutable PnL state of one market; every `with_*` method returns a new ledger.

    Definitions (side sign s = +1 buy, −1 sell):
    - spread    += s·(mid − price)·qty on each fill (positive when we buy below mid);
    - inventory += position·(new mid − previous mid) on each mark, and a fill first marks
      the existing position to the fill's mid, so inventory telescopes exactly;
    - fees      −= fee on each fill; funding −= payment on each funding payment.
    Realised/unrealised use the average-cost method: unrealised = position·mark −
    cost_basis, realised = total − unrealised (fees and funding are realised).
    """

    market: str
    position: Decimal = ZERO  # signed base quantity
    mark: Decimal | None = None  # last mid the position was valued at
    cost_basis: Decimal = ZERO  # position × average entry price
    cash: Decimal = ZERO  # −Σ s·price·qty
    spread: Decimal = ZERO
    inventory: Decimal = ZERO
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    fills: int = 0
    volume: Decimal = ZERO

    @classmethod
    def opening(cls, market: str, *, position: Decimal, mark: Decimal) -> MarketLedger:
        """A ledger that starts with an existing position, PnL counted from `mark` on."""
        position = _decimal(position, f"{market} opening position")
        mark = _decimal(mark, f"{market} opening mark", positive=True)
        with localcontext(_EXACT):
            return cls(market=market, position=position, mark=mark, cost_basis=position * mark)

    # -- events ---------------------------------------------------------------------------
    def apply(self, event: PnlEvent) -> MarketLedger:
        if event.market != self.market:
            raise ValueError(f"event for {event.market!r} applied to the {self.market!r} ledger")
        match event:
            case Fill():
                return self.with_fill(event.side, event.price, event.qty, fee=event.fee, mid=event.mid)
            case MarkUpdate():
                return self.with_mark(event.mid)
            case FundingPaid():
                return self.with_funding(event.payment)
        raise TypeError(f"not a PnL event: {event!r}")

    def with_mark(self, mid: Decimal | int) -> MarketLedger:
        if type(mid) is not Decimal or not mid.is_finite() or mid <= 0:  # the common case is quick
            mid = _decimal(mid, f"{self.market} mid", positive=True)
        with localcontext(_EXACT):
            inventory = self.inventory
            if self.mark is not None:
                inventory += self.position * (mid - self.mark)
        # Every field by hand: `attrs.evolve` looks the fields up on each call, and the
        # Account marks on every book top.
        return MarketLedger(
            market=self.market, position=self.position, mark=mid, cost_basis=self.cost_basis, cash=self.cash,
            spread=self.spread, inventory=inventory, fees=self.fees, funding=self.funding, fills=self.fills,
            volume=self.volume,
        )

    def with_fill(
        self,
        side: Side,
        price: Decimal | int,
        qty: Decimal | int,
        *,
        fee: Decimal | int = ZERO,
        mid: Decimal | int | None = None,
    ) -> MarketLedger:
        if not isinstance(side, Side):
            raise TypeError(f"{self.market} fill side: expected a Side, got {side!r}")
        price = _decimal(price, f"{self.market} fill price", positive=True)
        qty = _decimal(qty, f"{self.market} fill qty", positive=True)
        fee = _decimal(fee, f"{self.market} fill fee")
        if mid is None:
            mid = self.mark if self.mark is not None else price
        # Marking to the fill's mid first is what makes spread + inventory telescope.
        marked = self.with_mark(mid)
        assert marked.mark is not None  # with_mark just set it
        sign = side.sign
        with localcontext(_EXACT):
            signed_qty = sign * qty
            return attrs.evolve(
                marked,
                position=marked.position + signed_qty,
                cost_basis=_next_cost_basis(marked.position, marked.cost_basis, signed_qty, price),
                cash=marked.cash - signed_qty * price,
                spread=marked.spread + signed_qty * (marked.mark - price),
                fees=marked.fees - fee,
                fills=marked.fills + 1,
                volume=marked.volume + qty * price,
            )

    def with_funding(self, payment: Decimal | int) -> MarketLedger:
        payment = _decimal(payment, f"{self.market} funding payment")
        with localcontext(_EXACT):
            return attrs.evolve(self, funding=self.funding - payment)

    # -- derived values -------------------------------------------------------------------
    @property
    def total(self) -> Decimal:
        with localcontext(_EXACT):
            return self.spread + self.inventory + self.fees + self.funding

    @property
    def equity_change(self) -> Decimal:
        """Computed from cash and position alone, independently of the components."""
        with localcontext(_EXACT):
            value = self.position * self.mark if self.mark is not None else ZERO
            return self.cash + value + self.fees + self.funding

    @property
    def unrealised(self) -> Decimal:
        if self.mark is None:
            return ZERO
        with localcontext(_EXACT):
            return self.position * self.mark - self.cost_basis

    @property
    def realised(self) -> Decimal:
        with localcontext(_EXACT):
            return self.total - self.unrealised

    @property
    def average_entry(self) -> Decimal | None:
        if self.position == 0:
            return None
        with localcontext(_AVERAGING):
            return self.cost_basis / self.position

    def snapshot(self) -> PnlSnapshot:
        return PnlSnapshot(
            market=self.market,
            position=self.position,
            mark=self.mark,
            average_entry=self.average_entry,
            spread=self.spread,
            inventory=self.inventory,
            fees=self.fees,
            funding=self.funding,
            realised=self.realised,
            unrealised=self.unrealised,
            total=self.total,
            fills=self.fills,
            volume=self.volume,
        )


def _next_cost_basis(position: Decimal, cost_basis: Decimal, signed_qty: Decimal, price: Decimal) -> Decimal:
    """Average-cost basis after a trade: adds extend it, reductions keep the average."""
    if position == 0 or (position > 0) == (signed_qty > 0):
        return cost_basis + signed_qty * price
    remaining = position + signed_qty
    if remaining == 0:
        return ZERO
    if (remaining > 0) != (position > 0):
        # Flipped through zero: the new position's basis is this trade's price.
        return remaining * price
    with localcontext(_AVERAGING):
        reduced = cost_basis * remaining / position
    return reduced


# -- several markets ---------------------------------------------------------------------


def _read_only(ledgers: Mapping[str, MarketLedger]) -> Mapping[str, MarketLedger]:
    return MappingProxyType(dict(ledgers))


@attrs.frozen(kw_only=True)
class Portfolio:
    """Ledgers by market; `apply` routes an event to its market's ledger (created on use)."""

    ledgers: Mapping[str, MarketLedger] = attrs.field(
        factory=dict, converter=_read_only, hash=False
    )

    def apply(self, event: PnlEvent) -> Portfolio:
        ledger = self.ledgers.get(event.market) or MarketLedger(market=event.market)
        return Portfolio(ledgers={**self.ledgers, event.market: ledger.apply(event)})

    def ledger(self, market: str) -> MarketLedger:
        return self.ledgers.get(market) or MarketLedger(market=market)

    def totals(self) -> PnlTotals:
        return aggregate(ledger.snapshot() for ledger in self.ledgers.values())
