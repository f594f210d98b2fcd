"""`ObservedPort`: an `ExchangePort` wrapper that counts what the actor tree receives.

Two counts, both of what reaches the actors:
- market events, in the unit backtesting engines use (hftbacktest: one event per L2 level
  update, one per trade print): every price level of every book SNAPSHOT or DELTA frame,
  every public trade print, every mark price and every funding rate update;
- messages: stream messages by kind (book frames, funding, mark and trades frames,
  account updates).
Our fills are recorded off the account stream exactly as the Account actor sees them,
with the trio time they arrived. Nothing is changed on the way through.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from typing import Any

import attrs
import trio

from extmm.venue.port import AccountStream, ExchangePort, MessageStream
from extmm.venue.types import (
    AccountUpdate,
    BalanceUpdate,
    OrderRequest,
    OrdersUpdate,
    PlacedOrder,
    PositionsUpdate,
    StreamMessage,
    TradesUpdate,
)

BOOK = "book"
FUNDING = "funding"
MARK = "mark"
TRADES = "trades"
ACCOUNT = "account"
BOOK_LEVELS = "book_levels"  # market events of book frames: one per price level
_ACCOUNT_KINDS = {
    OrdersUpdate: "account_orders",
    TradesUpdate: "account_trades",
    PositionsUpdate: "account_positions",
    BalanceUpdate: "account_balance",
}


@attrs.frozen(kw_only=True)
class ObservedFill:
    """One of our fills as the Account actor received it."""

    at: float  # trio time of arrival
    ts_ms: int  # the venue's trade time
    trade_id: int
    market: str
    side: str  # BUY | SELL
    price: Decimal
    qty: Decimal
    fee: Decimal
    is_taker: bool
    position_after: Decimal  # signed, base asset, from the fills alone (fresh account)
    order_id: int = 0  # the venue's id of our order that was filled


def book_levels(data: Any) -> int:
    """Price levels in one book frame's data (`b` and `a`), SNAPSHOT or DELTA."""
    if not isinstance(data, dict):
        return 0
    return sum(len(side) for side in (data.get("b"), data.get("a")) if isinstance(side, list))


def trade_prints(data: Any) -> int:
    """Prints in one public trades frame's data (a list of trades)."""
    return len(data) if isinstance(data, list) else 0


# Stream kind → (market event kind, events in one message's data).
_MARKET_EVENTS: dict[str, tuple[str, Callable[[Any], int]]] = {
    BOOK: (BOOK_LEVELS, book_levels),
    TRADES: (TRADES, trade_prints),
    MARK: (MARK, lambda _: 1),
    FUNDING: (FUNDING, lambda _: 1),
}


class _CountingStream:
    def __init__(self, inner: MessageStream, on_message: Callable[[StreamMessage], None]) -> None:
        self._inner = inner
        self._on_message = on_message

    async def receive(self) -> StreamMessage:
        message = await self._inner.receive()
        self._on_message(message)
        return message


class _ObservedAccountStream:
    def __init__(self, inner: AccountStream, port: ObservedPort) -> None:
        self._inner = inner
        self._port = port

    async def receive(self) -> AccountUpdate:
        update = await self._inner.receive()
        self._port._on_account_update(update)
        return update


class ObservedPort:
    """Delegates everything to `inner`; counts market events and messages, records fills."""

    def __init__(self, inner: ExchangePort) -> None:
        self._inner = inner
        self.messages: Counter[str] = Counter()  # stream messages by kind
        self.market_events: Counter[str] = Counter()  # level updates, prints, marks, funding
        self.orders_placed = 0
        self.fills: list[ObservedFill] = []
        self._seen_trades: set[int] = set()
        self._positions: dict[str, Decimal] = {}
        self.on_fill: Callable[[ObservedFill], None] | None = None  # called for every new fill

    def __getattr__(self, name: str) -> Any:
        # REST reads, cancels, DMS, statistics...: straight through.
        return getattr(self._inner, name)

    @property
    def inner(self) -> ExchangePort:
        return self._inner

    async def place_order(self, order: OrderRequest) -> PlacedOrder:
        self.orders_placed += 1
        return await self._inner.place_order(order)

    # -- streams -----------------------------------------------------------------------
    def _counted(
        self, kind: str, opener: AbstractAsyncContextManager[MessageStream]
    ) -> AbstractAsyncContextManager[MessageStream]:
        @asynccontextmanager
        async def wrapped() -> AsyncIterator[MessageStream]:
            async with opener as stream:
                event_kind, events_in = _MARKET_EVENTS[kind]

                def count(message: StreamMessage) -> None:
                    self.messages[kind] += 1
                    self.market_events[event_kind] += events_in(message.data)

                yield _CountingStream(stream, count)

        return wrapped()

    def orderbook_stream(self, market: str) -> AbstractAsyncContextManager[MessageStream]:
        return self._counted(BOOK, self._inner.orderbook_stream(market))

    def public_trades_stream(self, market: str) -> AbstractAsyncContextManager[MessageStream]:
        return self._counted(TRADES, self._inner.public_trades_stream(market))

    def funding_stream(self, market: str) -> AbstractAsyncContextManager[MessageStream]:
        return self._counted(FUNDING, self._inner.funding_stream(market))

    def mark_price_stream(self, market: str) -> AbstractAsyncContextManager[MessageStream]:
        return self._counted(MARK, self._inner.mark_price_stream(market))

    @asynccontextmanager
    async def account_stream(self) -> AsyncIterator[AccountStream]:
        async with self._inner.account_stream() as stream:
            yield _ObservedAccountStream(stream, self)

    def _on_account_update(self, update: AccountUpdate) -> None:
        self.messages[_ACCOUNT_KINDS.get(type(update), ACCOUNT)] += 1
        if not isinstance(update, TradesUpdate) or update.is_snapshot:
            return
        now = trio.current_time()
        for trade in update.trades:
            if trade.id in self._seen_trades:
                continue  # repeated after a reconnect
            self._seen_trades.add(trade.id)
            position = self._positions.get(trade.market, Decimal(0)) + trade.side.sign * trade.qty
            self._positions[trade.market] = position
            self.fills.append(
                ObservedFill(
                    at=now,
                    ts_ms=trade.created_ms,
                    trade_id=trade.id,
                    market=trade.market,
                    side=trade.side.value,
                    price=trade.price,
                    qty=trade.qty,
                    fee=trade.fee,
                    is_taker=trade.is_taker,
                    position_after=position,
                    order_id=trade.order_id,
                )
            )
            if self.on_fill is not None:
                self.on_fill(self.fills[-1])
