"""`SharedAccountStream`: one upstream account connection, one queue per Account actor."""

from __future__ import annotations

from contextlib import asynccontextmanager
from decimal import Decimal

import pytest
import trio

from extmm.domain.units import Side
from extmm.venue.errors import StreamClosed
from extmm.venue.shared_account import SharedAccountStream, SharingPort
from extmm.venue.types import (
    BalanceInfo,
    BalanceUpdate,
    OrderInfo,
    OrdersUpdate,
    PositionInfo,
    PositionsUpdate,
    TradeInfo,
    TradesUpdate,
)


def order(ext: str, status: str = "NEW", market: str = "BTC-USD") -> OrderInfo:
    return OrderInfo(
        id=sum(map(ord, ext)), external_id=ext, market=market, side=Side.BUY, type="LIMIT", status=status,
        status_reason=None, price=Decimal(100), qty=Decimal(1),
    )


def position(market: str, size: str) -> PositionInfo:
    return PositionInfo(market=market, side="LONG", size=Decimal(size), open_price=Decimal(100),
                        mark_price=Decimal(100))


BALANCE = BalanceInfo(balance=Decimal(1000), equity=Decimal(1000), available_for_trade=Decimal(1000),
                      unrealised_pnl=Decimal(0))


class FakeAccountPort:
    """Each `account_stream()` is a new 'connection' fed from `feeds[-1]`."""

    def __init__(self) -> None:
        self.connections = 0
        self.feeds: list[trio.MemorySendChannel] = []
        self.opened = trio.Event()

    @asynccontextmanager
    async def account_stream(self):
        send, recv = trio.open_memory_channel(100)
        self.connections += 1
        self.feeds.append(send)
        self.opened.set()

        class Stream:
            async def receive(self):
                try:
                    item = await recv.receive()
                except trio.EndOfChannel:
                    raise StreamClosed("fake connection closed") from None
                if isinstance(item, Exception):
                    raise item
                return item

        yield Stream()

    def get_balance(self):  # anything else goes through SharingPort to here
        return "inner"

    async def wait_connection(self, n: int) -> trio.MemorySendChannel:
        while self.connections < n:
            self.opened = trio.Event()
            await self.opened.wait()
        return self.feeds[n - 1]


def snapshots() -> list:
    return [
        OrdersUpdate(orders=(order("a"), order("b", market="ETH-USD")), is_snapshot=True),
        PositionsUpdate(positions=(position("BTC-USD", "2"),), is_snapshot=True),
        BalanceUpdate(balance=BALANCE, is_snapshot=True),
    ]


async def test_subscribers_share_one_connection_and_late_joiners_get_the_current_view(nursery):
    port = FakeAccountPort()
    hub = SharedAccountStream(port, reconnect_delay=lambda n: 0.1)
    await nursery.start(hub.run)
    shared = SharingPort(port, hub)
    assert shared.get_balance() == "inner"
    async with shared.account_stream() as first:
        feed = await port.wait_connection(1)
        for update in snapshots():
            await feed.send(update)
        got = [await first.receive() for _ in range(3)]
        assert got == snapshots()
        await feed.send(OrdersUpdate(orders=(order("a", "CANCELLED"), order("c"))))
        await feed.send(PositionsUpdate(positions=(position("BTC-USD", "3"),)))
        trade = TradeInfo(id=7, order_id=1, external_order_id="a", market="BTC-USD", side=Side.BUY,
                          price=Decimal(100), qty=Decimal(1), value=Decimal(100), fee=Decimal(0), is_taker=False)
        await feed.send(TradesUpdate(trades=(trade,)))
        live = [await first.receive() for _ in range(3)]
        assert isinstance(live[2], TradesUpdate)

        async with shared.account_stream() as second:
            joined = [await second.receive() for _ in range(3)]
            assert joined[0] == OrdersUpdate(orders=(order("b", market="ETH-USD"), order("c")), is_snapshot=True)
            assert joined[1] == PositionsUpdate(positions=(position("BTC-USD", "3"),), is_snapshot=True)
            assert joined[2] == BalanceUpdate(balance=BALANCE, is_snapshot=True)
            await feed.send(OrdersUpdate(orders=(order("d"),)))
            assert (await first.receive()) == (await second.receive()) == OrdersUpdate(orders=(order("d"),))
            assert hub.subscriptions_up(for_at_least_s=0) == 2
    assert port.connections == 1


async def test_a_failed_connection_ends_every_subscription_and_comes_back_on_demand(nursery, autojump_clock):
    port = FakeAccountPort()
    hub = SharedAccountStream(port, reconnect_delay=lambda n: 1.0)
    await nursery.start(hub.run)
    async with hub.subscribe() as a, hub.subscribe() as b:
        feed = await port.wait_connection(1)
        for update in snapshots():
            await feed.send(update)
        await feed.send(StreamClosed("connection reset"))
        for sub in (a, b):
            for _ in range(3):
                await sub.receive()  # what arrived before the failure is still delivered
            with pytest.raises(StreamClosed, match="connection reset"):
                await sub.receive()
    # Nobody subscribed: no reconnect. A new subscriber brings the connection back.
    await trio.sleep(5)
    assert port.connections == 1
    async with hub.subscribe() as c:
        feed = await port.wait_connection(2)
        await feed.send(snapshots()[0])
        assert (await c.receive()).is_snapshot
    assert hub.failures == 1


async def test_a_subscriber_that_falls_behind_is_cut_off_alone(nursery):
    port = FakeAccountPort()
    hub = SharedAccountStream(port, queue_size=4)
    await nursery.start(hub.run)
    async with hub.subscribe() as slow, hub.subscribe() as fast:
        feed = await port.wait_connection(1)
        for i in range(6):
            await feed.send(OrdersUpdate(orders=(order(f"o{i}"),)))
            await fast.receive()
        for _ in range(4):
            await slow.receive()
        with pytest.raises(StreamClosed, match="fell behind"):
            await slow.receive()
        await feed.send(OrdersUpdate(orders=(order("after"),)))
        assert (await fast.receive()).orders[0].external_id == "after"
    assert port.connections == 1
