"""A pass-through `ExchangePort` that remembers what the bot asked of the venue.

The invariant checker needs facts only the port sees: every externalId sent as a new
order (duplicates), when the bot last asked to cancel each order (one being cancelled is
not an orphan; one still open long after is a lost cancel), whether the venue answers at
all (outages), when the bot's feed last delivered a book frame (stale books) and whether
its account streams are up (inventory comparisons). Everything is forwarded as is.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, TypeVar

import trio

from extmm.venue.errors import (
    AuthError,
    NetworkError,
    OrderRejected,
    RateLimited,
    TransientServerError,
    VenueError,
)
from extmm.venue.port import AccountStream, ExchangePort, MessageStream
from extmm.venue.types import (
    BalanceInfo,
    FeeRates,
    FundingPayment,
    MarketInfo,
    OrderInfo,
    OrderRequest,
    PlacedOrder,
    PositionInfo,
    TradeInfo,
    VenueStats,
)

T = TypeVar("T")


class _TimedStream:
    """A stream whose every delivered message is reported to `on_message`."""

    def __init__(self, inner: Any, on_message: Callable[[], None]) -> None:
        self._inner = inner
        self._on_message = on_message

    async def receive(self) -> Any:
        message = await self._inner.receive()
        self._on_message()
        return message


class RecordingPort:
    """Implements `ExchangePort` by forwarding to `inner`; records for the checker.

    `clock` is trio's clock by default (virtual under `MockClock`).
    """

    def __init__(self, inner: ExchangePort, *, clock: Callable[[], float] = trio.current_time) -> None:
        self._inner = inner
        self._clock = clock
        self.new_orders: Counter[str] = Counter()  # externalId → times sent as a new order
        self.duplicates: list[str] = []
        self.cancels_by_external_id: dict[str, float] = {}  # externalId → last cancel attempt
        self.cancels_by_market: dict[str, float] = {}
        self.cancel_all_at = float("-inf")
        self.book_frame_at: dict[str, float] = {}  # market → last book frame delivered
        # One entry per open account stream (each market's Account opens its own):
        # when its first update arrived, None until then.
        self._account_streams: dict[int, float | None] = {}
        self._stream_ids = itertools.count()
        self.last_answer_at = float("-inf")  # the venue answered a request (even "rejected")
        self.last_refusal_at = float("-inf")  # 429, 5xx or a network failure

    def __repr__(self) -> str:
        return f"RecordingPort({self._inner!r})"

    @property
    def inner(self) -> ExchangePort:
        return self._inner

    # -- what the checker asks ------------------------------------------------------------
    def cancel_requested_at(self, external_id: str) -> float | None:
        """When the bot last asked to cancel this very order (by externalId, in a mass
        cancel by id, or as the order a replace cancels); None: never."""
        return self.cancels_by_external_id.get(external_id)

    def market_cancel_at(self, market: str) -> float | None:
        """When the bot last asked to cancel everything in `market` (or everything)."""
        at = max(self.cancels_by_market.get(market, float("-inf")), self.cancel_all_at)
        return None if at == float("-inf") else at

    def account_streams_up(self, *, for_at_least_s: float) -> int:
        """How many account streams have delivered updates for at least this long."""
        since = self._clock() - for_at_least_s
        return sum(1 for up in self._account_streams.values() if up is not None and up <= since)

    def unreachable(self, *, for_s: float) -> bool:
        """The venue refused requests and answered none in the last `for_s` seconds."""
        since = self._clock() - for_s
        return self.last_refusal_at >= since and self.last_answer_at < since

    async def _call(self, request: Awaitable[T]) -> T:
        try:
            result = await request
        except (RateLimited, TransientServerError, NetworkError):
            self.last_refusal_at = self._clock()
            raise
        except VenueError:
            self.last_answer_at = self._clock()
            raise
        self.last_answer_at = self._clock()
        return result

    def forget_cancels_before(self, horizon: float) -> None:
        """Drop cancel attempts older than `horizon` (bounded memory in long runs)."""
        for ext in [e for e, at in self.cancels_by_external_id.items() if at < horizon]:
            del self.cancels_by_external_id[ext]

    # -- reads -------------------------------------------------------------------------
    async def get_markets(self, names: Sequence[str] | None = None) -> list[MarketInfo]:
        return await self._call(self._inner.get_markets(names))

    async def get_fees(self, markets: Sequence[str]) -> list[FeeRates]:
        return await self._call(self._inner.get_fees(markets))

    async def get_balance(self) -> BalanceInfo | None:
        return await self._call(self._inner.get_balance())

    async def get_positions(self, market: str | None = None) -> list[PositionInfo]:
        return await self._call(self._inner.get_positions(market))

    async def get_open_orders(self, market: str | None = None) -> list[OrderInfo]:
        return await self._call(self._inner.get_open_orders(market))

    async def get_orders_by_external_id(self, external_id: str) -> list[OrderInfo]:
        return await self._call(self._inner.get_orders_by_external_id(external_id))

    async def get_order_history(self, market: str | None = None, limit: int = 100) -> list[OrderInfo]:
        return await self._call(self._inner.get_order_history(market, limit))

    async def get_trades(self, market: str | None = None, limit: int = 100) -> list[TradeInfo]:
        return await self._call(self._inner.get_trades(market, limit))

    async def get_funding_history(self, market: str | None = None, limit: int = 100) -> list[FundingPayment]:
        return await self._call(self._inner.get_funding_history(market, limit))

    async def get_leverage(self, markets: Sequence[str]) -> dict[str, Decimal]:
        return await self._call(self._inner.get_leverage(markets))

    async def set_leverage(self, market: str, leverage: Decimal) -> None:
        await self._call(self._inner.set_leverage(market, leverage))

    # -- writes ------------------------------------------------------------------------
    async def place_order(self, order: OrderRequest) -> PlacedOrder:
        ext = order.external_id
        self.new_orders[ext] += 1
        if self.new_orders[ext] == 2:
            self.duplicates.append(ext)
        if order.cancel_id is None:
            return await self._call(self._inner.place_order(order))
        before = self.cancels_by_external_id.get(order.cancel_id)
        self.cancels_by_external_id[order.cancel_id] = self._clock()
        try:
            return await self._call(self._inner.place_order(order))
        except (OrderRejected, RateLimited, AuthError):
            # Refused outright: the order to be replaced was not touched and stays wanted.
            if before is None:
                self.cancels_by_external_id.pop(order.cancel_id, None)
            else:
                self.cancels_by_external_id[order.cancel_id] = before
            raise

    async def cancel_order(self, order_id: int) -> None:
        await self._call(self._inner.cancel_order(order_id))

    async def cancel_order_by_external_id(self, external_id: str) -> None:
        self.cancels_by_external_id[external_id] = self._clock()
        await self._call(self._inner.cancel_order_by_external_id(external_id))

    async def mass_cancel(
        self,
        *,
        order_ids: Sequence[int] = (),
        external_ids: Sequence[str] = (),
        markets: Sequence[str] = (),
        cancel_all: bool = False,
    ) -> None:
        now = self._clock()
        for ext in external_ids:
            self.cancels_by_external_id[ext] = now
        for market in markets:
            self.cancels_by_market[market] = now
        if cancel_all:
            self.cancel_all_at = now
        await self._call(
            self._inner.mass_cancel(
                order_ids=order_ids, external_ids=external_ids, markets=markets, cancel_all=cancel_all
            )
        )

    async def set_dead_mans_switch(self, countdown_s: int) -> None:
        await self._call(self._inner.set_dead_mans_switch(countdown_s))

    # -- streams -----------------------------------------------------------------------
    @asynccontextmanager
    async def orderbook_stream(self, market: str) -> AsyncIterator[MessageStream]:
        def delivered() -> None:
            self.book_frame_at[market] = self._clock()

        async with self._inner.orderbook_stream(market) as stream:
            yield _TimedStream(stream, delivered)

    def public_trades_stream(self, market: str) -> Any:
        return self._inner.public_trades_stream(market)

    def funding_stream(self, market: str) -> Any:
        return self._inner.funding_stream(market)

    def mark_price_stream(self, market: str) -> Any:
        return self._inner.mark_price_stream(market)

    @asynccontextmanager
    async def account_stream(self) -> AsyncIterator[AccountStream]:
        slot = next(self._stream_ids)
        self._account_streams[slot] = None

        def delivered() -> None:
            if self._account_streams.get(slot) is None:
                self._account_streams[slot] = self._clock()

        try:
            async with self._inner.account_stream() as stream:
                yield _TimedStream(stream, delivered)
        finally:
            del self._account_streams[slot]

    def statistics(self) -> VenueStats:
        return self._inner.statistics()

