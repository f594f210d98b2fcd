"""The exchange port: everything an actor may ask of the venue.

Implementations: `extmm.venue.network.NetworkVenue` (REST + WebSocket, real or simulated
exchange over sockets) and `extmm.sim.inproc.InProcessVenue` (the simulator engine in the
same trio run, for virtual-time backtests). Both raise only `extmm.venue.errors` types.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Protocol

from extmm.venue.types import (
    AccountUpdate,
    BalanceInfo,
    FeeRates,
    FundingPayment,
    MarketInfo,
    OrderInfo,
    OrderRequest,
    PlacedOrder,
    PositionInfo,
    StreamMessage,
    TradeInfo,
    VenueStats,
)


class MessageStream(Protocol):
    """One open subscription. `receive` raises StreamClosed / SequenceGap on failure."""

    async def receive(self) -> StreamMessage: ...


class AccountStream(Protocol):
    async def receive(self) -> AccountUpdate: ...


# External ids per mass cancel: SPEC §4.10 documents no limit on `externalOrderIds`; we keep
# each request body small (shutdown, halts, breaker trips and `cancel-all` all chunk by it).
MAX_IDS_PER_CANCEL = 100


class ExchangePort(Protocol):
    # -- public ---------------------------------------------------------------
    async def get_markets(self, names: Sequence[str] | None = None) -> list[MarketInfo]: ...

    # -- private reads (idempotent; retried with capped backoff) -----------------
    async def get_fees(self, markets: Sequence[str]) -> list[FeeRates]: ...
    async def get_balance(self) -> BalanceInfo | None: ...  # None: zero balance (404)
    async def get_positions(self, market: str | None = None) -> list[PositionInfo]: ...
    async def get_open_orders(self, market: str | None = None) -> list[OrderInfo]: ...
    async def get_orders_by_external_id(self, external_id: str) -> list[OrderInfo]: ...
    async def get_order_history(self, market: str | None = None, limit: int = 100) -> list[OrderInfo]: ...
    async def get_trades(self, market: str | None = None, limit: int = 100) -> list[TradeInfo]: ...
    async def get_funding_history(self, market: str | None = None, limit: int = 100) -> list[FundingPayment]: ...
    async def get_leverage(self, markets: Sequence[str]) -> dict[str, Decimal]: ...

    # -- account settings ---------------------------------------------------------------
    async def set_leverage(self, market: str, leverage: Decimal) -> None: ...

    # -- writes (never blindly retried) ------------------------------------------
    async def place_order(self, order: OrderRequest) -> PlacedOrder: ...
    async def cancel_order(self, order_id: int) -> None: ...
    async def cancel_order_by_external_id(self, external_id: str) -> None: ...
    async def mass_cancel(
        self,
        *,
        order_ids: Sequence[int] = (),
        external_ids: Sequence[str] = (),
        markets: Sequence[str] = (),
        cancel_all: bool = False,
    ) -> None: ...
    async def set_dead_mans_switch(self, countdown_s: int) -> None: ...

    # -- streams (one subscription each; the caller owns reconnects) ---------------
    def orderbook_stream(self, market: str) -> AbstractAsyncContextManager[MessageStream]: ...
    def public_trades_stream(self, market: str) -> AbstractAsyncContextManager[MessageStream]: ...
    def funding_stream(self, market: str) -> AbstractAsyncContextManager[MessageStream]: ...
    def mark_price_stream(self, market: str) -> AbstractAsyncContextManager[MessageStream]: ...
    def account_stream(self) -> AbstractAsyncContextManager[AccountStream]: ...

    # -- health --------------------------------------------------------------------
    def statistics(self) -> VenueStats: ...
