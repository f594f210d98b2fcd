"""One account-stream connection shared by every market's Account actor.

The venue's private account stream carries every market's orders, trades, positions and
balance. With one connection per Account actor, each update crossed the network, was
decoded and parsed once per market — four times with four markets — on the venue's side
and ours. `SharedAccountStream` holds the one connection (started by the root in its
nursery) and hands each subscriber its own bounded queue of the parsed updates.

To an actor a subscription behaves like its own connection: `port.account_stream()` of
`SharingPort` yields it, it begins with snapshots (orders, positions, balance — built from
the hub's current view when the actor joins a connection that is already up), and it
ends with `StreamClosed` when the shared connection fails or the subscriber falls more
than `queue_size` updates behind; the actor's own reconnect logic takes it from there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from loguru import logger

from extmm.domain.backoff import Backoff
from extmm.venue.errors import RECOVERABLE_STREAM_ERRORS as RECOVERABLE
from extmm.venue.errors import StreamClosed
from extmm.venue.port import ExchangePort
from extmm.venue.types import (
    AccountUpdate,
    BalanceInfo,
    BalanceUpdate,
    OrderInfo,
    OrdersUpdate,
    PositionInfo,
    PositionsUpdate,
    track_open_orders,
)

# Reconnect pacing when the caller gives none (the root passes the bots' stream policy).
DEFAULT_RECONNECT = Backoff(initial=0.5, factor=2.0, cap=10.0, jitter=0.0)


class HubSubscription:
    """One actor's view of the shared stream; `receive()` like a connection's."""

    def __init__(self, queue_size: int) -> None:
        self._send, self._recv = trio.open_memory_channel[AccountUpdate](queue_size)
        self.error: StreamClosed | None = None
        self.first_delivery_at: float | None = None

    async def receive(self) -> AccountUpdate:
        try:
            update = await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self.error or StreamClosed("shared account stream: subscription ended") from None
        if self.first_delivery_at is None:
            self.first_delivery_at = trio.current_time()
        return update

    @property
    def live(self) -> bool:
        return self.error is None

    def offer(self, update: AccountUpdate) -> None:
        if self.error is not None:
            return
        try:
            self._send.send_nowait(update)
        except trio.WouldBlock:
            self.end(StreamClosed("shared account stream: this subscriber fell behind"))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.end(StreamClosed("shared account stream: subscription closed"))

    def end(self, error: StreamClosed) -> None:
        if self.error is None:
            self.error = error
        self._send.close()


class SharedAccountStream:
    """Start `run` in a nursery (`await nursery.start(hub.run)`); subscribe with
    `async with hub.subscribe() as stream`. It connects while anyone is subscribed."""

    def __init__(
        self,
        port: ExchangePort,
        *,
        reconnect_delay: Callable[[int], float] = lambda n: DEFAULT_RECONNECT.delay(n - 1),
        queue_size: int = 1024,
    ) -> None:
        self._port = port
        self._reconnect_delay = reconnect_delay
        self._queue_size = queue_size
        self._subscribers: set[HubSubscription] = set()
        self._wanted = trio.Event()
        self._connected = False
        # The account as the current connection has shown it (snapshot parts received so far).
        self._orders: dict[str, OrderInfo] = {}
        self._positions: dict[str, PositionInfo] = {}
        self._balance: BalanceInfo | None = None
        self._have: set[str] = set()
        self.failures = 0

    # -- subscribers -----------------------------------------------------------------------
    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[HubSubscription]:
        sub = HubSubscription(self._queue_size)
        for update in self._snapshots():
            sub.offer(update)
        self._subscribers.add(sub)
        self._wanted.set()
        try:
            await trio.lowlevel.checkpoint()
            yield sub
        finally:
            self._subscribers.discard(sub)
            sub.end(StreamClosed("shared account stream: unsubscribed"))

    def subscriptions_up(self, *, for_at_least_s: float) -> int:
        """How many subscribers have been receiving for at least this long."""
        since = trio.current_time() - for_at_least_s
        return sum(
            1
            for sub in self._subscribers
            if sub.live and sub.first_delivery_at is not None and sub.first_delivery_at <= since
        )

    def _snapshots(self) -> list[AccountUpdate]:
        """What a fresh connection would start with, from the current connection's view."""
        if not self._connected:
            return []
        out: list[AccountUpdate] = []
        if "orders" in self._have:
            out.append(OrdersUpdate(orders=tuple(self._orders.values()), is_snapshot=True))
        if "positions" in self._have:
            out.append(PositionsUpdate(positions=tuple(self._positions.values()), is_snapshot=True))
        if self._balance is not None:
            out.append(BalanceUpdate(balance=self._balance, is_snapshot=True))
        return out

    # -- the connection ----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        failures = 0
        while True:
            await self._wanted.wait()
            try:
                async with self._port.account_stream() as stream:
                    self._reset(connected=True)
                    while True:
                        update = await stream.receive()
                        self._apply(update)
                        for sub in list(self._subscribers):
                            sub.offer(update)
                        if failures and {"orders", "positions"} <= self._have:
                            failures = 0  # snapshots in: this connection is good
            except RECOVERABLE as exc:
                error = StreamClosed(f"shared account stream: {exc}")
            except Exception as exc:  # a bug here must not take every market down at once
                logger.exception("shared account stream: unexpected failure")
                error = StreamClosed(f"shared account stream: {type(exc).__name__}")
            failures += 1
            self.failures += 1
            self._reset(connected=False)
            for sub in list(self._subscribers):
                sub.end(error)
            self._subscribers.clear()
            self._wanted = trio.Event()
            delay = self._reconnect_delay(failures)
            logger.warning("{}; reconnecting when needed, not before {:.2f}s", error, delay)
            await trio.sleep(delay)

    def _reset(self, *, connected: bool) -> None:
        self._connected = connected
        self._orders.clear()
        self._positions.clear()
        self._balance = None
        self._have.clear()

    def _apply(self, update: AccountUpdate) -> None:
        match update:
            case OrdersUpdate(orders=orders, is_snapshot=snap):
                track_open_orders(self._orders, orders, snapshot=snap)
                if snap:
                    self._have.add("orders")
            case PositionsUpdate(positions=positions, is_snapshot=snap):
                if snap:
                    self._positions.clear()
                    self._have.add("positions")
                for p in positions:
                    self._positions[p.market] = p
            case BalanceUpdate(balance=balance):
                self._balance = balance
            case _:
                pass


class SharingPort:
    """`ExchangePort` whose `account_stream()` is a subscription to a `SharedAccountStream`;
    everything else goes straight to the inner port."""

    def __init__(self, inner: ExchangePort, hub: SharedAccountStream) -> None:
        self._inner = inner
        self._hub = hub

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"SharingPort({self._inner!r})"

    def account_stream(self) -> Any:
        return self._hub.subscribe()
