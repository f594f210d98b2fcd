"""What the engine publishes about a market: live stats (SPEC §3.2), prints, applied
funding rates, book snapshots and the book's level changes since the last drain.

Book changes accumulate per market until drained (the engine never drains on its own),
so a stalled consumer gets them all at once later; drain a market before taking the
snapshot for a new subscriber so that the snapshot and the following deltas line up.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from extmm.sim.account import to_decimal
from extmm.sim.book import LevelUnits
from extmm.sim.model import (
    BookDelta,
    BookLevel,
    BookSnapshot,
    FundingRatePoint,
    LevelChange,
    MarketStats,
    PublicTrade,
)
from extmm.sim.world import World


class MarketView:
    """Market reads and book drains over a `World`; see the module docstring."""

    def __init__(self, world: World) -> None:
        self.world = world

    def stats(self, name: str) -> MarketStats:
        world = self.world
        m = world.market(name)
        spec = m.spec
        best_bid = m.book.bids.best()
        best_ask = m.book.asks.best()
        last = m.last_ticks
        first = m.first_ticks
        change = (last - first) if last is not None and first is not None else 0
        long_lots = sum(
            a.positions[name].lots
            for a in world.accounts.values()
            if name in a.positions and a.positions[name].lots > 0
        )
        mark = m.mark
        zero_price = spec.ticks_to_price(0)
        return MarketStats(
            daily_volume=to_decimal(Fraction(m.volume_units) * m.terms.tick * m.terms.lot),
            daily_volume_base=spec.lots_to_qty(m.volume_lots),
            daily_price_change=spec.ticks_to_price(change),
            daily_price_change_percentage=(
                Decimal(change) / Decimal(first) if first else Decimal(0)
            ).quantize(Decimal("0.0001")),
            daily_low=spec.ticks_to_price(m.low_ticks) if m.low_ticks is not None else zero_price,
            daily_high=spec.ticks_to_price(m.high_ticks) if m.high_ticks is not None else zero_price,
            last_price=spec.ticks_to_price(last) if last is not None else zero_price,
            ask_price=spec.ticks_to_price(best_ask) if best_ask is not None else zero_price,
            bid_price=spec.ticks_to_price(best_bid) if best_bid is not None else zero_price,
            mark_price=mark,
            index_price=m.index,
            funding_rate=m.funding_rate,
            next_funding_ms=world.next_funding_ms,
            open_interest=to_decimal(long_lots * m.terms.lot * m.mark_fraction),
            open_interest_base=spec.lots_to_qty(long_lots),
        )

    def public_trades(self, name: str, limit: int = 50) -> list[PublicTrade]:
        """The latest prints, oldest first."""
        trades = self.world.market(name).public_trades
        return list(trades)[-limit:] if limit else []

    def funding_rates(self, name: str, start_ms: int = 0, end_ms: int | None = None) -> list[FundingRatePoint]:
        """Hourly applied rates in [start, end], newest first."""
        points = self.world.market(name).funding_points
        end = self.world.now if end_ms is None else end_ms
        return [p for p in reversed(points) if start_ms <= p.ts <= end]

    def book_snapshot(self, name: str, depth: int | None = None) -> BookSnapshot:
        """Aggregated levels best-first. Drain book changes first when serving a new subscriber."""
        m = self.world.market(name)
        spec = m.spec
        return BookSnapshot(
            market=name,
            ts=self.world.now,
            bids=tuple(
                BookLevel(price=spec.ticks_to_price(p), qty=spec.lots_to_qty(q))
                for p, q in m.book.levels(True, depth)
            ),
            asks=tuple(
                BookLevel(price=spec.ticks_to_price(p), qty=spec.lots_to_qty(q))
                for p, q in m.book.levels(False, depth)
            ),
        )

    def book_levels(self, name: str, depth: int | None = None) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Integer (ticks, lots) levels best-first: bids, asks."""
        book = self.world.market(name).book
        return book.levels(True, depth), book.levels(False, depth)

    def drain_book_changes(self) -> list[BookDelta]:
        """Per market, the levels that changed since its last drain (unchanged markets left out)."""
        out = []
        for name in self.world.markets:
            delta = self.drain_book_delta(name)
            if delta.bids or delta.asks:
                out.append(delta)
        return out

    def drain_level_changes(self) -> list[tuple[str, list[LevelUnits], list[LevelUnits]]]:
        """`drain_book_changes` in integers, for publishers that render their own text:
        `(market, bids, asks)` of changed markets, levels `(ticks, Δlots, lots)` best first."""
        out = []
        for name, m in self.world.markets.items():
            bids, asks = m.book.drain_changes()
            if bids or asks:
                out.append((name, bids, asks))
        return out

    def drain_book_delta(self, name: str) -> BookDelta:
        """One market's level changes since its last drain (empty tuples: nothing changed)."""
        m = self.world.market(name)
        spec = m.spec
        bids, asks = m.book.drain_changes()
        return BookDelta(
            market=name,
            ts=self.world.now,
            bids=tuple(
                LevelChange(price=spec.ticks_to_price(p), delta=spec.lots_to_qty(d), qty=spec.lots_to_qty(q))
                for p, d, q in bids
            ),
            asks=tuple(
                LevelChange(price=spec.ticks_to_price(p), delta=spec.lots_to_qty(d), qty=spec.lots_to_qty(q))
                for p, d, q in asks
            ),
        )
