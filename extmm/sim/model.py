"""Values the simulator engine hands out: request errors, state snapshots and outbox events.

Everything here is immutable and carries wire-ready Decimals (prices on the tick grid,
sizes on the lot grid, money at 6 decimals); `extmm.sim.wire` renders them as the
venue's JSON. `SimOrder` is the one mutable record, private to the engine and book.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import attrs

from extmm.domain.units import Side

CROWD_ACCOUNT_ID = 0  # the synthetic crowd: resting liquidity and takers, never reported

# Order statuses and status reasons used by the engine (SPEC §4.12).
NEW = "NEW"
PARTIALLY_FILLED = "PARTIALLY_FILLED"
FILLED = "FILLED"
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"
EXPIRED = "EXPIRED"
OPEN_STATUSES = frozenset({NEW, PARTIALLY_FILLED})


class SimReject(Exception):
    """A request the venue refuses synchronously (REST-level).

    The server renders it as `{"status":"ERROR","error":{"code":code,"message":message}}`
    with HTTP `http_status`: 400 validation, 401 authentication, 404 unknown resource.
    """

    def __init__(self, code: int, message: str, http_status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


@attrs.define(slots=True, eq=False)
class SimOrder:
    """An order inside the engine (mutable; outsiders see `OrderState` snapshots)."""

    id: int
    account_id: int
    client_id: int
    external_id: str
    market: str
    side: Side
    type: str
    time_in_force: str
    price_ticks: int
    qty_lots: int
    post_only: bool = False
    reduce_only: bool = False
    stp: str = "ACCOUNT"
    fee_rate: Decimal = Decimal(0)  # the signed maximum fee rate
    expiry_ms: int | None = None
    created_ms: int = 0
    updated_ms: int = 0
    status: str = NEW
    status_reason: str | None = None
    filled_lots: int = 0
    cancelled_lots: int = 0
    filled_units: int = 0  # sum of ticks*lots over fills, for the average price
    payed_fee: Fraction = Fraction(0)
    resting: bool = False  # on the book (the last step of the state machine may differ)

    @property
    def remaining_lots(self) -> int:
        return self.qty_lots - self.filled_lots - self.cancelled_lots

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


# -- state snapshots -----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class OrderState:
    """One order's full state (SPEC §4.4)."""

    id: int
    account_id: int
    external_id: str
    market: str
    type: str
    side: Side
    status: str
    status_reason: str | None
    price: Decimal
    average_price: Decimal | None
    qty: Decimal
    filled_qty: Decimal
    cancelled_qty: Decimal
    reduce_only: bool
    post_only: bool
    payed_fee: Decimal
    created_ms: int
    updated_ms: int
    expiry_ms: int | None
    time_in_force: str
    stp: str


@attrs.frozen(kw_only=True)
class Fill:
    """One of an account's trades (SPEC §4.5); `external_order_id` is stream-only on the wire."""

    id: int
    account_id: int
    market: str
    order_id: int
    external_order_id: str
    side: Side
    price: Decimal
    qty: Decimal
    value: Decimal
    fee: Decimal
    is_taker: bool
    trade_type: str
    created_ms: int


@attrs.frozen(kw_only=True)
class PositionState:
    """One position (SPEC §4.3). `size` is absolute; a closed one has size 0, CLOSED."""

    id: int
    account_id: int
    market: str
    status: str  # OPENED | CLOSED
    side: str  # LONG | SHORT
    leverage: Decimal
    size: Decimal
    value: Decimal
    open_price: Decimal
    mark_price: Decimal
    unrealised_pnl: Decimal
    realised_pnl: Decimal
    created_ms: int
    updated_ms: int


@attrs.frozen(kw_only=True)
class BalanceState:
    """Account balance (SPEC §4.2): equity = balance + unrealised PnL."""

    collateral_name: str
    balance: Decimal
    equity: Decimal
    available_for_trade: Decimal
    available_for_withdrawal: Decimal
    unrealised_pnl: Decimal
    initial_margin: Decimal
    margin_ratio: Decimal
    exposure: Decimal
    leverage: Decimal
    updated_ms: int


@attrs.frozen(kw_only=True)
class Ledger:
    """Exact (rational) account totals since creation, for PnL identities.

    equity − deposits == realised_pnl + unrealised_pnl − fees_paid − funding_paid, exactly.
    """

    deposits: Fraction
    balance: Fraction
    realised_pnl: Fraction
    unrealised_pnl: Fraction
    fees_paid: Fraction
    funding_paid: Fraction

    @property
    def equity(self) -> Fraction:
        return self.balance + self.unrealised_pnl


@attrs.frozen(kw_only=True)
class FundingPaymentRecord:
    """One hourly funding payment of a position; `funding_fee` > 0 means paid."""

    id: int
    account_id: int
    market: str
    position_id: int
    side: str
    size: Decimal
    value: Decimal
    mark_price: Decimal
    funding_fee: Decimal
    funding_rate: Decimal
    paid_ms: int


@attrs.frozen(kw_only=True)
class FeeSchedule:
    market: str
    maker: Decimal
    taker: Decimal
    builder: Decimal = Decimal(0)


@attrs.frozen(kw_only=True)
class PublicTrade:
    """A print on the public tape (SPEC §5.4); `side` is the taker's side."""

    id: int
    market: str
    side: Side
    trade_type: str
    ts: int
    price: Decimal
    qty: Decimal


@attrs.frozen(kw_only=True)
class FundingRatePoint:
    market: str
    rate: Decimal
    ts: int


@attrs.frozen(kw_only=True)
class BookLevel:
    price: Decimal
    qty: Decimal


@attrs.frozen(kw_only=True)
class BookSnapshot:
    """Aggregated levels, best first: bids descending, asks ascending."""

    market: str
    ts: int
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]


@attrs.frozen(kw_only=True)
class LevelChange:
    """A level that changed since the last drain: `delta` signed, `qty` absolute (0 = gone)."""

    price: Decimal
    delta: Decimal
    qty: Decimal


@attrs.frozen(kw_only=True)
class BookDelta:
    market: str
    ts: int
    bids: tuple[LevelChange, ...]
    asks: tuple[LevelChange, ...]


@attrs.frozen(kw_only=True)
class AccountInfo:
    """What `GET /user/account/info` shows; secrets stay out of the repr."""

    id: int
    client_id: int
    description: str
    vault: int
    public_key: int
    api_key: str = attrs.field(repr=False)
    private_key: int | None = attrs.field(repr=False, default=None)

    @property
    def public_hex(self) -> str:
        return hex(self.public_key)


# -- outbox events --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class OrderStateEvent:
    """An order's new state on the account stream (SPEC §5.4 ORDER); not `extmm.domain.orders.OrderEvent`."""

    account_id: int
    order: OrderState
    ts: int


@attrs.frozen(kw_only=True)
class TradeEvent:
    account_id: int
    trade: Fill
    ts: int


@attrs.frozen(kw_only=True)
class PositionEvent:
    account_id: int
    position: PositionState
    ts: int


@attrs.frozen(kw_only=True)
class BalanceEvent:
    account_id: int
    balance: BalanceState
    ts: int


@attrs.frozen(kw_only=True)
class PublicTradesEvent:
    market: str
    trades: tuple[PublicTrade, ...]
    ts: int


@attrs.frozen(kw_only=True)
class MarkPriceEvent:
    market: str
    price: Decimal
    ts: int


@attrs.frozen(kw_only=True)
class IndexPriceEvent:
    market: str
    price: Decimal
    ts: int


@attrs.frozen(kw_only=True)
class FundingRateEvent:
    """`applied=True` once an hour when positions pay; otherwise the per-minute estimate."""

    market: str
    rate: Decimal
    ts: int
    applied: bool


AccountEvent = OrderStateEvent | TradeEvent | PositionEvent | BalanceEvent
MarketEvent = PublicTradesEvent | MarkPriceEvent | IndexPriceEvent | FundingRateEvent
SimEvent = AccountEvent | MarketEvent


@attrs.frozen(kw_only=True)
class MarketStats:
    """Live `marketStats` (SPEC §3.2); the daily figures cover the simulation so far."""

    daily_volume: Decimal
    daily_volume_base: Decimal
    daily_price_change: Decimal
    daily_price_change_percentage: Decimal
    daily_low: Decimal
    daily_high: Decimal
    last_price: Decimal
    ask_price: Decimal
    bid_price: Decimal
    mark_price: Decimal
    index_price: Decimal
    funding_rate: Decimal
    next_funding_ms: int
    open_interest: Decimal
    open_interest_base: Decimal
