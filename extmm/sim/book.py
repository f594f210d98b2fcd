"""Price-time priority limit order book of one market, in integer ticks and lots.

Each price level keeps its orders in arrival order (a dict preserves insertion order
and removes in O(1)). The book remembers, per level, the size it had at the last
`drain_changes()`, so a server can publish deltas with a signed change and the new
absolute size (SPEC §5.3) without keeping its own copy.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from extmm.domain.units import Side
from extmm.sim.model import SimOrder

LevelUnits = tuple[int, int, int]  # a changed level: (price ticks, signed change in lots, lots now)


class PriceLevel:
    __slots__ = ("price", "orders", "lots")

    def __init__(self, price: int) -> None:
        self.price = price
        self.orders: dict[int, SimOrder] = {}
        self.lots = 0

    def first(self) -> SimOrder:
        return next(iter(self.orders.values()))


class BookSide:
    """One side; `prices` is kept sorted ascending (bids read it from the end)."""

    __slots__ = ("is_bid", "levels", "prices")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.levels: dict[int, PriceLevel] = {}
        self.prices: list[int] = []

    def best(self) -> int | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.is_bid else self.prices[0]

    def crosses(self, price: int, limit: int) -> bool:
        """Whether a resting `price` on this side is reachable by a taker limited at `limit`."""
        return price >= limit if self.is_bid else price <= limit

    def best_first(self) -> Iterator[PriceLevel]:
        prices = reversed(self.prices) if self.is_bid else iter(self.prices)
        for price in prices:
            yield self.levels[price]

    def lots_at(self, price: int) -> int:
        level = self.levels.get(price)
        return level.lots if level else 0

    def lots_through(self, limit: int) -> int:
        """Total resting size at prices a taker limited at `limit` can reach."""
        total = 0
        for level in self.best_first():
            if not self.crosses(level.price, limit):
                break
            total += level.lots
        return total


class OrderBook:
    def __init__(self, market: str) -> None:
        self.market = market
        self.bids = BookSide(is_bid=True)
        self.asks = BookSide(is_bid=False)
        # (is_bid, price) -> size at the last drain, recorded on a level's first change.
        self._baseline: dict[tuple[bool, int], int] = {}

    def side(self, is_bid: bool) -> BookSide:
        return self.bids if is_bid else self.asks

    def _touch(self, side: BookSide, price: int, lots_before: int) -> None:
        key = (side.is_bid, price)
        if key not in self._baseline:
            self._baseline[key] = lots_before

    def add(self, order: SimOrder) -> None:
        """Queue `order` at the back of its price level."""
        side = self.bids if order.side is Side.BUY else self.asks
        price = order.price_ticks
        level = side.levels.get(price)
        if level is None:
            level = PriceLevel(price)
            side.levels[price] = level
            bisect.insort(side.prices, price)
        self._touch(side, price, level.lots)
        level.orders[order.id] = order
        level.lots += order.remaining_lots
        order.resting = True

    def reduce(self, order: SimOrder, lots: int) -> None:
        """Take `lots` off a resting order's level (a fill); removes it when nothing is left.

        Call after the order's own counters were updated.
        """
        side = self.bids if order.side is Side.BUY else self.asks
        level = side.levels[order.price_ticks]
        self._touch(side, level.price, level.lots)
        level.lots -= lots
        if order.remaining_lots <= 0:
            self._unlink(side, level, order)

    def remove(self, order: SimOrder) -> None:
        """Take a resting order off the book entirely (cancel, expiry, replace)."""
        side = self.bids if order.side is Side.BUY else self.asks
        level = side.levels[order.price_ticks]
        self._touch(side, level.price, level.lots)
        level.lots -= order.remaining_lots
        self._unlink(side, level, order)

    def _unlink(self, side: BookSide, level: PriceLevel, order: SimOrder) -> None:
        del level.orders[order.id]
        order.resting = False
        if not level.orders:
            del side.levels[level.price]
            index = bisect.bisect_left(side.prices, level.price)
            del side.prices[index]

    def drain_changes(self) -> tuple[list[LevelUnits], list[LevelUnits]]:
        """Levels whose size differs from the last drain: `(price, delta, new size)`, best first."""
        bids: list[LevelUnits] = []
        asks: list[LevelUnits] = []
        for (is_bid, price), before in self._baseline.items():
            side = self.bids if is_bid else self.asks
            now = side.lots_at(price)
            if now != before:
                (bids if is_bid else asks).append((price, now - before, now))
        self._baseline.clear()
        bids.sort(key=lambda change: -change[0])
        asks.sort(key=lambda change: change[0])
        return bids, asks

    def levels(self, is_bid: bool, depth: int | None = None) -> list[tuple[int, int]]:
        """Aggregated `(price, lots)` best first."""
        out: list[tuple[int, int]] = []
        for level in self.side(is_bid).best_first():
            if depth is not None and len(out) >= depth:
                break
            out.append((level.price, level.lots))
        return out
