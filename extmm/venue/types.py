"""Wire-level values exchanged through the exchange port (Decimal prices and sizes).

Enums from the venue are kept as plain strings so an unknown value (SPEC §10: e.g.
TRIGGERED, NEGATIVE_EQUITY) never breaks parsing; the domain interprets them.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import attrs

from extmm.domain.units import MarketSpec, Side


@attrs.frozen(kw_only=True)
class MarketInfo:
    name: str
    active: bool
    status: str  # ACTIVE | REDUCE_ONLY | DELISTED | PRELISTED | DISABLED | unknown
    spec: MarketSpec
    raw: dict[str, Any] = attrs.field(eq=False, repr=False)  # the venue's object, for SDK signing


@attrs.frozen(kw_only=True)
class FeeRates:
    market: str
    maker: Decimal
    taker: Decimal


@attrs.frozen(kw_only=True)
class BalanceInfo:
    balance: Decimal
    equity: Decimal
    available_for_trade: Decimal
    unrealised_pnl: Decimal
    updated_ms: int = 0


@attrs.frozen(kw_only=True)
class PositionInfo:
    market: str
    side: str  # LONG | SHORT
    size: Decimal  # absolute
    open_price: Decimal
    mark_price: Decimal
    unrealised_pnl: Decimal = Decimal(0)
    realised_pnl: Decimal = Decimal(0)
    value: Decimal = Decimal(0)

    @property
    def signed_size(self) -> Decimal:
        return self.size if self.side == "LONG" else -self.size


@attrs.frozen(kw_only=True)
class OrderInfo:
    """One order's full state as the venue reports it (REST or account stream)."""

    id: int
    external_id: str
    market: str
    side: Side
    type: str  # LIMIT | MARKET | ...
    status: str  # NEW | PARTIALLY_FILLED | FILLED | CANCELLED | REJECTED | EXPIRED | ...
    status_reason: str | None
    price: Decimal
    qty: Decimal
    filled_qty: Decimal = Decimal(0)
    average_price: Decimal | None = None
    post_only: bool = False
    reduce_only: bool = False
    created_ms: int = 0
    updated_ms: int = 0
    expiry_ms: int | None = None


@attrs.frozen(kw_only=True)
class TradeInfo:
    """One of our fills."""

    id: int
    order_id: int
    external_order_id: str | None
    market: str
    side: Side
    price: Decimal
    qty: Decimal
    value: Decimal
    fee: Decimal
    is_taker: bool
    trade_type: str = "TRADE"
    created_ms: int = 0


@attrs.frozen(kw_only=True)
class FundingPayment:
    market: str
    side: str
    size: Decimal
    value: Decimal
    funding_fee: Decimal  # paid (+) or received (-) in collateral, as the venue reports
    funding_rate: Decimal
    mark_price: Decimal
    paid_ms: int


def signed_fee_rate(rate: Decimal) -> Decimal:
    """The fee rate to sign: the account's rate, never below 0.

    The signed `fee` is a maximum fee rate the order accepts (SPEC §8.1). `/user/fees` is
    the authority on our rates (SPEC §4.6) and a rebate tier would return a negative maker
    rate, which the SDK refuses with ValueError (SPEC §12 "Fees"). A rebate is signed as 0
    (a bound of 0 admits any rebate); it reaches the PnL ledger as the negative fee the
    venue reports on each fill."""
    return rate if rate > 0 else Decimal(0)


@attrs.frozen(kw_only=True)
class OrderRequest:
    """A limit or market order to sign and place. `cancel_id` makes it a replace."""

    market: str
    side: Side
    qty: Decimal
    price: Decimal
    external_id: str
    expiry_ms: int  # epoch ms, from our clock (passed in)
    max_fee_rate: Decimal  # signed maximum fee rate (maker rate for post-only)
    post_only: bool = True
    reduce_only: bool = False
    order_type: str = "LIMIT"
    time_in_force: str = "GTT"
    stp: str = "ACCOUNT"
    cancel_id: str | None = None


@attrs.frozen(kw_only=True)
class PlacedOrder:
    id: int
    external_id: str


# -- stream messages ---------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StreamMessage:
    """A raw stream frame: the envelope checked, the payload left as parsed JSON."""

    type: str | None
    data: Any
    ts: int
    seq: int


@attrs.frozen(kw_only=True)
class OrdersUpdate:
    orders: tuple[OrderInfo, ...]
    is_snapshot: bool = False


@attrs.frozen(kw_only=True)
class TradesUpdate:
    trades: tuple[TradeInfo, ...]
    is_snapshot: bool = False


@attrs.frozen(kw_only=True)
class PositionsUpdate:
    positions: tuple[PositionInfo, ...]
    is_snapshot: bool = False


@attrs.frozen(kw_only=True)
class BalanceUpdate:
    balance: BalanceInfo
    is_snapshot: bool = False


AccountUpdate = OrdersUpdate | TradesUpdate | PositionsUpdate | BalanceUpdate

# Order statuses in which an order may still rest on the book (SPEC §4.6).
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED", "UNTRIGGERED"})


def track_open_orders(open_orders: dict[str, OrderInfo], orders: Iterable[OrderInfo], *, snapshot: bool) -> None:
    """Apply an account-stream ORDER update to open orders by externalId: a snapshot
    replaces them; an order in an open status is added or updated, any other removed."""
    if snapshot:
        open_orders.clear()
    for o in orders:
        if o.status in OPEN_STATUSES:
            open_orders[o.external_id] = o
        else:
            open_orders.pop(o.external_id, None)


@attrs.frozen(kw_only=True)
class VenueStats:
    """Counters the circuit breaker and metrics read (monotonic totals)."""

    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    tokens_available: float = 0.0
