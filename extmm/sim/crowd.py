"""The synthetic crowd (account 0): each market's flow (`extmm.sim.flow`) made orders.

Every flow step the mid diffuses, the crowd's resting ladder is refreshed, crowd takers
sweep the book through the matcher, and the mark, index and funding estimate are
published at their cadences. The crowd itself reports nothing; what it does to our
orders is reported by the matcher like any other fill, and classified for
`World.maker_fills` (sweep / queue / crossed).
"""

from __future__ import annotations

from decimal import Decimal

from extmm.domain.units import Side
from extmm.sim.matching import Matcher
from extmm.sim.model import (
    CROWD_ACCOUNT_ID,
    FundingRateEvent,
    IndexPriceEvent,
    MarkPriceEvent,
    SimOrder,
)
from extmm.sim.world import SimMarket, World, rate_decimal


class Crowd:
    """Drives every market's synthetic flow in a `World`; see the module docstring."""

    def __init__(self, world: World, matcher: Matcher) -> None:
        self.world = world
        self.matcher = matcher

    def step(self, t: int) -> None:
        """One flow step at time `t` (a multiple of the configured step)."""
        world = self.world
        config = world.config
        dt_s = config.step_ms / 1000.0
        for m in world.markets.values():
            flow = m.flow
            if flow is None:
                continue
            flow.diffuse(dt_s)
            self.refresh(m)
            for is_buy, delta in flow.takers(dt_s):
                self._take(m, is_buy, delta)
                self.refresh(m)
            m.mark = Decimal(f"{flow.mark():.6f}")
            if t % config.mark_interval_ms == 0:
                m.index = Decimal(f"{flow.mid:.6f}")
                world.events.append(MarkPriceEvent(market=m.name, price=m.mark, ts=t))
                world.events.append(IndexPriceEvent(market=m.name, price=m.index, ts=t))
            if t % config.funding_estimate_interval_ms == 0:
                m.funding_rate = rate_decimal(flow.redraw_funding(float(m.funding_cap)))
                world.events.append(FundingRateEvent(market=m.name, rate=m.funding_rate, ts=t, applied=False))

    def _order(self, m: SimMarket, is_buy: bool, ticks: int, lots: int, tif: str) -> SimOrder:
        now = self.world.now
        return SimOrder(
            id=next(self.world.order_ids),
            account_id=CROWD_ACCOUNT_ID,
            client_id=CROWD_ACCOUNT_ID,
            external_id="",
            market=m.name,
            side=Side.BUY if is_buy else Side.SELL,
            type="LIMIT",
            time_in_force=tif,
            price_ticks=ticks,
            qty_lots=lots,
            stp="DISABLED",
            created_ms=now,
            updated_ms=now,
        )

    def refresh(self, m: SimMarket) -> None:
        """Bring the crowd's resting ladder in market `m` to what its flow wants now."""
        assert m.flow is not None

        def place(is_bid: bool, ticks: int, lots: int) -> SimOrder | None:
            order = self._order(m, is_bid, ticks, lots, "GTT")
            best = (m.book.asks if is_bid else m.book.bids).best()
            if best is None or (best > ticks if is_bid else best < ticks):
                m.book.add(order)  # the common case: nothing to match, nothing to report
                return order
            rested = self.matcher.submit(m, order)
            self.matcher.classify_maker_fills(lambda _maker: "crossed")
            return rested

        def cancel(order: SimOrder) -> None:
            if order.resting:
                m.book.remove(order)

        m.flow.refresh(place, cancel)

    def _take(self, m: SimMarket, is_buy: bool, delta: float) -> None:
        assert m.flow is not None
        limit = m.flow.sweep_limit(is_buy, delta)
        opposite = m.book.asks if is_buy else m.book.bids
        lots = opposite.lots_through(limit)
        if lots <= 0:
            return
        taker = self._order(m, is_buy, limit, lots, "IOC")
        self.world.maker_fill_buffer.clear()
        self.matcher.submit(m, taker)
        last = m.last_ticks

        def reason(maker: SimOrder) -> str:
            if last is None:
                return "queue"
            through = last > maker.price_ticks if is_buy else last < maker.price_ticks
            return "sweep" if through else "queue"

        self.matcher.classify_maker_fills(reason)
