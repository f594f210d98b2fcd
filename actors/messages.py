"""Messages between the actors of one market: one union per channel.

    Feed ──FeedOut──▶ Book ──QuoterIn──▶ Quoter ──RiskIn──▶ Risk ──ExecIn──▶ Executor
      ▲                 │ (mids: AccountIn)                   ▲                 ▲
      └──FeedControl────┘                 Account ──────────── ┴── QuoterIn/RiskIn/ExecIn
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from extmm.domain.execution import SideTarget
from extmm.domain.quoting import QuoteIntent
from extmm.domain.units import Side
from extmm.venue.types import OrderInfo, TradeInfo

# -- Feed → Book ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class BookFrame:
    type: str | None
    data: Any
    seq: int
    exchange_ts_ms: int
    received_at: float  # trio time


@attrs.frozen(kw_only=True)
class FeedReset:
    """A new connection: the book is unknown until its first snapshot."""

    reason: str


@attrs.frozen(kw_only=True)
class FundingRate:
    rate: float  # hourly rate; positive: longs pay shorts
    exchange_ts_ms: int


@attrs.frozen(kw_only=True)
class MarkPrice:
    price: Decimal
    exchange_ts_ms: int


@attrs.frozen(kw_only=True)
class PublicTrades:
    """One public trades frame, unparsed (`[{S, p, q, T, ...}]`); the Feed opens the trades
    stream only for a market whose model recalibrates online."""

    data: Any
    exchange_ts_ms: int
    received_at: float  # trio time


FeedOut = BookFrame | FeedReset | FundingRate | MarkPrice | PublicTrades


# -- Book → Feed ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Resync:
    reason: str


FeedControl = Resync


# -- Book / Account → Quoter ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TopOfBook:
    market: str
    bid_ticks: int | None
    bid_lots: int | None
    ask_ticks: int | None
    ask_lots: int | None
    mid: float | None
    sigma: float | None  # relative, per √second
    valid: bool
    updated_at: float  # trio time of the frame that produced it
    seq: int | None


@attrs.frozen(kw_only=True)
class Inventory:
    """The Account's view of the position, sent on change and periodically."""

    position_lots: int
    balance_usd: float | None
    equity_usd: float | None
    open_bids: int
    open_asks: int
    drawdown_usd: float
    at: float
    live: bool = True  # False while the account stream is down: the position may be stale

    @property
    def open_orders(self) -> int:
        return self.open_bids + self.open_asks


@attrs.frozen(kw_only=True)
class TradePrints:
    """The prints of one public trades frame, with the book as it stood when they arrived:
    what the online calibration measures aggressor depths against."""

    prints: tuple[tuple[bool, int], ...]  # (taker is buy, price ticks)
    mid: float  # book mid before the prints
    touch_ticks: float  # half the book's spread, in ticks
    at: float  # trio time


QuoterIn = TopOfBook | Inventory | FundingRate | TradePrints


# -- Quoter → Risk ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Proposal:
    intent: QuoteIntent
    mid: float | None
    book_updated_at: float
    proposed_at: float


@attrs.frozen(kw_only=True)
class TradingMode:
    """Root/breaker decision for this market: quote or hold everything off."""

    active: bool
    reason: str = ""
    size_fraction: float = 1.0  # half-open breaker: quote smaller while probing


RiskIn = Proposal | Inventory | TradingMode


# -- Risk → Executor; Account → Executor -------------------------------------------------


@attrs.frozen(kw_only=True)
class Approved:
    bid: SideTarget | None
    ask: SideTarget | None
    reasons: tuple[str, ...] = ()
    decided_at: float = 0.0
    kill: bool = False
    # When the book the targets were computed from last changed (trio time): the Executor
    # takes them down once that book is older than the stale threshold, Risk alive or not.
    book_updated_at: float | None = None
    # Ladder levels beyond the first, per side (level 1 first); a missing level is None.
    more_bids: tuple[SideTarget | None, ...] = ()
    more_asks: tuple[SideTarget | None, ...] = ()

    def target(self, side: Side, level: int = 0) -> SideTarget | None:
        """The approved target of one ladder level of one side (None: no order there)."""
        first, more = (self.bid, self.more_bids) if side is Side.BUY else (self.ask, self.more_asks)
        if level == 0:
            return first
        return more[level - 1] if level - 1 < len(more) else None


@attrs.frozen(kw_only=True)
class OrderUpdate:
    """The venue's view of one order (account stream), for the Executor to apply."""

    order: OrderInfo


@attrs.frozen(kw_only=True)
class FillEvent:
    trade: TradeInfo


ExecIn = Approved | OrderUpdate | FillEvent


# -- Book → Account ----------------------------------------------------------------------

AccountIn = TopOfBook
