"""The replay venue's matching engine: the recorded book, our orders queued in it.

`ReplayEngine` is a `SimEngine` without synthetic flow whose markets follow a recording
(`extmm.sim.recording`): our orders rest in the engine as usual (accounts, fees, funding,
positions, the account stream — all the simulator's), while the *other* liquidity is the
recorded L2 book, kept beside it. Fill model (conservative, queue-position):

- a resting order joins the back of the queue: `ahead` = the recorded size at its price
  when it arrives (0 when it improves on the recorded book);
- a recorded print at our price by an aggressor on the other side first consumes
  `ahead`; only what is left of the print fills us;
- a print *through* our price (a buy above our ask, a sell below our bid) fills our
  whole remainder: the aggressor swept our level;
- when the recorded level shrinks below `ahead` (cancels), `ahead` shrinks with it —
  cancels are assumed to be behind us otherwise;
- nothing else fills us: a recorded book that merely crosses our price does not;
- post-only orders that would cross the recorded touch are rejected (POST_ONLY_FAILED);
  other crossing orders take the recorded liquidity as takers, level by level.

Fills are executed as crowd IOC orders against our resting order, so every event the bot
sees comes from the engine exactly as in the synthetic simulator. The recording is walked
by `extmm.sim.replay_driver.ReplayDriver`; `extmm.sim.replay.replay_venue` wires them up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs
from loguru import logger

from extmm.domain.l2 import BadFrame, L2Book
from extmm.domain.units import Side
from extmm.sim.engine import UNCHECKED, EngineConfig, SimEngine
from extmm.sim.model import CROWD_ACCOUNT_ID, OPEN_STATUSES, SimOrder, SimReject
from extmm.sim.validation import grid_units, parse_order_body
from extmm.venue.types import PlacedOrder


@attrs.define
class QueueSlot:
    """One of our resting orders and the recorded size queued ahead of it at its price."""

    order: SimOrder
    ahead: int  # lots


class ReplayEngine(SimEngine):
    """A `SimEngine` whose markets' other liquidity is a recorded book (see the module docstring)."""

    def __init__(self, config: EngineConfig, *, start_ms: int, markets: Sequence[Mapping[str, Any]]) -> None:
        if config.synthetic_flow:
            config = attrs.evolve(config, synthetic_flow=False)
        super().__init__(config, start_ms=start_ms, markets=markets)
        self.books = {name: L2Book(self.market_spec(name)) for name in self.market_names()}
        self.queues: dict[str, dict[int, QueueSlot]] = {name: {} for name in self.market_names()}
        # Per market, the levels (is bid, ticks) of the orders in `queues` (None: to be
        # recomputed): a DELTA that changes none of them cannot shrink a queue (`on_book`).
        # Reset wherever `queues` changes (here only).
        self._queued_levels: dict[str, frozenset[tuple[bool, int]] | None] = {}
        self.fills: Counter[str] = Counter()  # by reason: queue | through | taker
        self.bad_book: dict[str, str] = {}  # market → the last book frame that could not be applied
        self._next_crowd_id = 9_000_000_000_000_000_001

    def advance(self, now_ms: int) -> None:
        """`SimEngine.advance` without synthetic flow (never here): only the timers. (Once
        per recorded frame: the world directly, not through `_now`.)"""
        world = self.world
        if now_ms > world.now:
            self.timers.run(now_ms)
            world.now = now_ms

    def _crowd_order(self, market: str, side: Side, ticks: int, lots: int, tif: str) -> SimOrder:
        self._next_crowd_id += 1
        return SimOrder(
            id=self._next_crowd_id,
            account_id=CROWD_ACCOUNT_ID,
            client_id=CROWD_ACCOUNT_ID,
            external_id="",
            market=market,
            side=side,
            type="LIMIT",
            time_in_force=tif,
            price_ticks=ticks,
            qty_lots=lots,
            stp="DISABLED",
            created_ms=self._now,
            updated_ms=self._now,
        )

    # -- our orders ----------------------------------------------------------------------
    def place_order(
        self,
        account_id: int,
        body: Mapping[str, Any],
        now_ms: int,
        *,
        force_reject: str | None = None,
        signature: Any = UNCHECKED,
    ) -> PlacedOrder:
        try:
            intent = parse_order_body(body, strict_nonce=self.config.strict_nonce)
            book = self.books.get(intent.market)
            ticks, lots = grid_units(self.market_spec(intent.market), intent) if book is not None else (0, 0)
        except SimReject:
            book = None  # the engine reports the problem itself
        injected: list[SimOrder] = []
        if book is not None and book.valid:
            is_buy = intent.side is Side.BUY
            touch = book.best_ask if is_buy else book.best_bid
            crosses = touch is not None and (ticks >= touch if is_buy else ticks <= touch)
            if crosses and intent.post_only and force_reject is None:
                force_reject = "POST_ONLY_FAILED"
            elif crosses and force_reject is None:
                injected = self._inject_liquidity(intent.market, is_buy, ticks, lots)
        try:
            # The served simulator checks signatures in a worker thread and passes the verdict.
            ack = super().place_order(account_id, body, now_ms, force_reject=force_reject, signature=signature)
        finally:
            m = self._market(intent.market) if injected else None
            for extra in injected:
                if extra.resting:
                    assert m is not None
                    m.book.remove(extra)
                if extra.filled_lots:
                    self.fills["taker"] += 1
        order = self._accounts[account_id].orders_by_id.get(ack.id)
        if order is not None and order.resting and order.market in self.books:
            book = self.books[order.market]
            ahead = book.lots_at(order.side is Side.BUY, order.price_ticks) if book.valid else 0
            self.queues[order.market][order.id] = QueueSlot(order=order, ahead=ahead)
            self._queued_levels[order.market] = None
        return ack

    def _inject_liquidity(self, market: str, is_buy: bool, limit: int, lots: int) -> list[SimOrder]:
        """The recorded levels a crossing taker would sweep, as crowd orders in the engine's book."""
        book = self.books[market]
        side = book.asks if is_buy else book.bids
        prices = sorted((p for p in side if (p <= limit if is_buy else p >= limit)), reverse=not is_buy)
        m = self._market(market)
        out: list[SimOrder] = []
        for price in prices:
            if lots <= 0:
                break
            take = min(side[price], lots)
            order = self._crowd_order(market, Side.SELL if is_buy else Side.BUY, price, take, "GTT")
            m.book.add(order)
            out.append(order)
            lots -= take
        return out

    def _live_slots(self, market: str) -> dict[int, QueueSlot]:
        slots = self.queues[market]
        for order_id in [i for i, s in slots.items() if not s.order.resting or not s.order.is_open]:
            del slots[order_id]
            self._queued_levels[market] = None
        return slots

    def _fill_ours(self, market: str, order: SimOrder, lots: int, reason: str) -> None:
        lots = min(lots, order.remaining_lots)
        if lots <= 0:
            return
        taker = self._crowd_order(market, order.side.opposite, order.price_ticks, lots, "IOC")
        self._submit(self._market(market), taker)
        self.fills[reason] += 1

    # -- the recorded world ----------------------------------------------------------------
    def on_book(self, market: str, frame_type: str | None, data: Mapping[str, Any], now_ms: int) -> bool:
        """Apply a recorded book frame; returns whether the book is valid after it."""
        self.advance(now_ms)
        book = self.books[market]
        try:
            changed = book.apply(frame_type, data)
        except BadFrame as exc:
            logger.warning("replay {}: bad book frame, book invalid until the next snapshot: {}", market, exc)
            self.bad_book[market] = str(exc)
            return False
        slots = self.queues[market]
        if book.valid and slots:
            # Every queue is at most its level's size after each frame (it starts equal,
            # and only shrinks), so a DELTA shrinks none unless it changed one of their
            # levels; a snapshot may have changed any level. (Slots of orders gone are
            # dropped here or in `_live_slots`, whichever comes first: no one else sees them.)
            if (frame_type or data.get("t")) == "DELTA":
                watched = self._queued_levels.get(market)
                if watched is None:
                    watched = self._queued_levels[market] = frozenset(
                        (s.order.side is Side.BUY, s.order.price_ticks) for s in slots.values()
                    )
                for is_bid, ticks, _ in changed:
                    if (is_bid, ticks) in watched:
                        break
                else:
                    return True
            dead = []
            for order_id, slot in slots.items():
                order = slot.order
                if not order.resting or order.status not in OPEN_STATUSES:
                    dead.append(order_id)
                    continue
                level = (book.bids if order.side is Side.BUY else book.asks).get(order.price_ticks, 0)
                if level < slot.ahead:
                    slot.ahead = level
            for order_id in dead:
                del slots[order_id]
                self._queued_levels[market] = None
        return book.valid

    def on_prints(self, market: str, prints: Sequence[tuple[bool, int, int, int]], now_ms: int) -> int:
        """Recorded prints (taker is buy, ticks, lots, ts); fills our queued orders; returns fills made."""
        self.advance(now_ms)
        made = 0
        for taker_buy, ticks, lots, _ts in prints:
            slots = self._live_slots(market)
            if not slots:
                return made
            for slot in list(slots.values()):
                order = slot.order
                ours_is_ask = order.side is Side.SELL
                if ours_is_ask != taker_buy or not order.resting:
                    continue
                through = ticks > order.price_ticks if taker_buy else ticks < order.price_ticks
                if through:
                    self._fill_ours(market, order, order.remaining_lots, "through")
                    made += 1
                elif ticks == order.price_ticks:
                    left = lots - slot.ahead
                    slot.ahead = max(slot.ahead - lots, 0)
                    if left > 0:
                        self._fill_ours(market, order, left, "queue")
                        made += 1
        return made

    def set_recorded_mark(self, market: str, price: Decimal) -> None:
        m = self._market(market)
        m.mark = price
        m.index = price
