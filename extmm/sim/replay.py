"""Replay a market-data recording as a venue: the recorded book, our orders queued in it.

`ReplayEngine` is a `SimEngine` without synthetic flow whose markets follow a recording
(`extmm.research.record`): our orders rest in the engine as usual (accounts, fees, funding,
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
sees comes from the engine exactly as in the synthetic simulator. `ReplayDriver` walks the
recording in (virtual) time, applies each frame to the world at its exchange timestamp
and delivers it to the bot's subscriptions re-sequenced, at the recorded receive time or
`feed_latency_s` after the exchange timestamp; order latency is the in-process port's
per-request delay. `replay_venue(...)` wires engine, runner, driver and an
`ExchangePort` (`ReplayVenue`) for `extmm.research.backtest`.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
import trio.testing
from loguru import logger

from extmm.domain.l2 import BadFrame, L2Book, parse_prints
from extmm.domain.units import Side
from extmm.sim.clock import VirtualClock
from extmm.sim.engine import UNCHECKED, EngineConfig, SimEngine
from extmm.sim.inproc import InProcessStream, InProcessVenue, PublicStreams
from extmm.sim.model import CROWD_ACCOUNT_ID, OPEN_STATUSES, SimOrder, SimReject
from extmm.sim.recording import RecordingError, RecordingReader, expand_parts
from extmm.sim.runner import SimRunner
from extmm.sim.subscription import OutFrame, Subscription
from extmm.sim.validation import grid_units, parse_order_body
from extmm.venue.errors import OrderRejected
from extmm.venue.types import PlacedOrder

# -- the engine ------------------------------------------------------------------------------


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
        self.fills: Counter[str] = Counter()  # by reason: queue | through | taker
        self.bad_book: dict[str, str] = {}  # market → the last book frame that could not be applied
        self._next_crowd_id = 9_000_000_000_000_000_001

    def advance(self, now_ms: int) -> None:
        """`SimEngine.advance` without synthetic flow (never here): only the timers."""
        if now_ms > self._now:
            self._run_timers(now_ms)
            self._now = now_ms

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
        if now_ms > self._now:
            self.advance(now_ms)
        book = self.books[market]
        try:
            book.apply(frame_type, data)
        except BadFrame as exc:
            logger.warning("replay {}: bad book frame, book invalid until the next snapshot: {}", market, exc)
            self.bad_book[market] = str(exc)
            return False
        slots = self.queues[market]
        if book.valid and slots:
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


# -- the driver -------------------------------------------------------------------------------

_REPLAYED = frozenset(("orderbook", "trades", "funding", "mark"))


def _jump_to(clock: Any, when: float) -> None:
    """Move an autojumping clock to exactly `when` (no float drift: frames due then are due)."""
    if isinstance(clock, VirtualClock):
        clock.jump_to(when)
    else:
        clock.jump(max(when - clock.current_time(), 0.0))


@attrs.define
class ReplayStats:
    frames: Counter[str] = attrs.Factory(Counter)
    market_frames: Counter[str] = attrs.Factory(Counter)  # book frames read, by market
    bad_frames: int = 0
    conflated_frames: int = 0  # recorded book deltas merged into the delivered one of their window
    book_gaps: int = 0
    last_ms: int = 0


class ReplayDriver:
    """Walks a recording in trio time: applies frames to the engine, delivers them to subscribers."""

    def __init__(
        self,
        engine: ReplayEngine,
        runner: SimRunner,
        reader: RecordingReader,
        *,
        markets: Sequence[str],
        start_ms: int,
        feed_latency_s: float | None = None,
        capacity: int = 4096,
        book_interval_ms: int = 0,
    ) -> None:
        self.engine = engine
        self.runner = runner
        self.reader = reader
        self.markets = frozenset(markets)
        self.start_ms = start_ms
        self.feed_latency_s = feed_latency_s
        self._latency_ms = None if feed_latency_s is None else int(round(feed_latency_s * 1000))
        self.capacity = capacity
        self.finished = trio.Event()
        self.stats = ReplayStats()
        self._t0 = trio.current_time()
        self._subs: dict[tuple[str, str], set[Subscription]] = {}
        self._awaiting_snapshot: set[Subscription] = set()
        self._last_seq: dict[str, int | None] = {}
        self._has_mark: set[str] = set()
        self._last_mark: dict[str, Decimal] = {}
        self._last_world_ms = start_ms
        self._last_deliver_ms = start_ms
        # Book deltas are delivered as the venue pushes them: merged per `book_interval_ms`
        # window (Extended: every 100 ms, SPEC §5.3); 0 delivers every recorded frame. The
        # matching engine still applies every frame at its own time.
        self.book_interval_ms = book_interval_ms
        self._pending: dict[str, dict[str, Any]] = {}  # market → the merged delta of the open window
        self._others_blocked = False  # see _advance_to
        self._next_deadline = 0.0  # trio time of the earliest timer while _others_blocked
        # Frames waiting for their delivery time (see _push): (due, n, subscription, frame).
        self._outq: list[tuple[float, int, Subscription, OutFrame]] = []
        self._queued: dict[Subscription, tuple[int, float]] = {}  # frames waiting, the last one's time
        self._pushed = 0

    # -- subscriptions --------------------------------------------------------------------
    def subscribe(self, kind: str, market: str) -> Subscription:
        sub = Subscription(kind, market=market, capacity=self.capacity)  # type: ignore[arg-type]
        self._subs.setdefault((kind, market), set()).add(sub)
        now = trio.current_time()
        if kind == "orderbook":
            book = self.engine.books[market]
            if book.valid:
                self._push(
                    sub, {"type": "SNAPSHOT", "data": book.snapshot_data(), "ts": self._last_world_ms}, now
                )
            else:
                self._awaiting_snapshot.add(sub)
        elif kind == "mark" and market in self._last_mark:
            data = {"m": market, "p": str(self._last_mark[market]), "ts": 0}
            self._push(sub, {"type": "MP", "data": data, "ts": self._last_world_ms}, now)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close(1000, "unsubscribed")
        self._awaiting_snapshot.discard(sub)
        for subs in self._subs.values():
            subs.discard(sub)

    def _push(self, sub: Subscription, frame: dict[str, Any], due: float) -> None:
        """Send `frame` on `sub`, arriving at `due` (trio time).

        A frame due later waits here, not in the subscription's channel, and is pushed at
        `due` (`_release`): the reader sees it at the same virtual time as if it had
        slept in `InProcessStream.receive` until `due`, without a wake-up and a timer per
        frame. A subscription's frames keep their order (none overtakes an earlier one)."""
        sub.seq += 1
        frame = dict(frame)
        frame["seq"] = sub.seq
        out = OutFrame(orjson.dumps(frame).decode(), due)
        waiting, last = self._queued.get(sub, (0, due))
        if not waiting and due <= trio.current_time():
            self._others_blocked = False  # the subscriber may wake
            sub.push(out)
            return
        at = max(due, last)  # never before a frame queued earlier on this subscription
        self._queued[sub] = (waiting + 1, at)
        self._pushed += 1
        heapq.heappush(self._outq, (at, self._pushed, sub, out))

    async def _release(self, before: float, clock: Any) -> None:
        """Push the waiting frames due before `before`, each at its due time."""
        q = self._outq
        while q and q[0][0] < before:
            due = q[0][0]
            if due > trio.current_time():
                await self._advance_to(due, clock)
            while q and q[0][0] <= due:
                _, _, sub, out = heapq.heappop(q)
                waiting, last = self._queued[sub]
                if waiting > 1:
                    self._queued[sub] = (waiting - 1, last)
                else:
                    del self._queued[sub]
                self._others_blocked = False  # the subscriber may wake
                sub.push(out)

    def _deliver(self, kind: str, market: str, frame: dict[str, Any], due: float, *, snapshot: bool) -> None:
        subs = self._subs.get((kind, market))
        if not subs:
            return
        for sub in list(subs):
            if sub.closed:
                subs.discard(sub)
                continue
            if sub in self._awaiting_snapshot:
                if not snapshot:
                    continue
                self._awaiting_snapshot.discard(sub)
            self._push(sub, frame, due)

    # -- time --------------------------------------------------------------------------------
    def _times(self, record: dict[str, Any], frame: dict[str, Any]) -> tuple[int, int]:
        """(world ms, delivery ms) of a recorded frame, both monotone."""
        received = int(record.get("t") or self._last_deliver_ms)
        ts = frame.get("ts")
        exchange = ts if type(ts) is int and ts > 0 and -60_000 < ts - received < 60_000 else received
        latency = self._latency_ms
        if latency is None:
            world = exchange if exchange < received else received
            deliver = received
        else:
            world = exchange
            deliver = world + latency
        if world < self._last_world_ms:
            world = self._last_world_ms
        if deliver < world:
            deliver = world
        if deliver < self._last_deliver_ms:
            deliver = self._last_deliver_ms
        self._last_world_ms = world
        self._last_deliver_ms = deliver
        return world, deliver

    def _trio_time(self, epoch_ms: int) -> float:
        return self._t0 + (epoch_ms - self.start_ms) / 1000.0

    # -- the walk ------------------------------------------------------------------------------
    async def _advance_to(self, when: float, clock: Any) -> None:
        """Let trio's time reach `when`, yielding to the bot only when it has something to do.

        Under an autojumping clock (`VirtualClock`, or `MockClock(autojump_threshold=0)`),
        when every other task is blocked, nothing can happen before the earliest timer of
        any task: the clock is moved forward in place, to `when` or to that timer
        (which then runs; we wait until everyone is blocked again and go on), instead of a
        sleep and a trip through the scheduler. "Every other task is blocked" is known
        after `wait_all_tasks_blocked()` and stays true until this driver wakes someone (a
        delivered frame, a fill); so does the earliest timer, which only a running task
        can change. trio's own run-queue length cannot tell (tasks woken in the same batch
        are not in it). Under a real clock it simply sleeps.
        """
        now = trio.current_time()
        if when <= now:
            if not self._others_blocked:
                await trio.lowlevel.checkpoint()
            return
        if clock is None:
            self._others_blocked = False
            await trio.sleep_until(when)
            return
        while True:
            if not self._others_blocked:
                await trio.testing.wait_all_tasks_blocked()
                now = trio.current_time()  # an autojump may have run timers meanwhile
                if now >= when:
                    return
                self._others_blocked = True
                self._next_deadline = now + trio.lowlevel.current_statistics().seconds_to_next_deadline
            if self._next_deadline >= when:  # a timer due at `when` itself runs next
                _jump_to(clock, when)
                return
            if self._next_deadline <= now:  # cannot happen with everyone blocked; never spin
                self._others_blocked = False
                await trio.sleep_until(when)
                return
            _jump_to(clock, self._next_deadline)  # that timer's task runs now
            self._others_blocked = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._t0 = trio.current_time()
        current = trio.lowlevel.current_clock()
        autojumps = isinstance(current, VirtualClock) or (
            isinstance(current, trio.testing.MockClock) and current.autojump_threshold == 0
        )
        clock = current if autojumps else None
        task_status.started()
        stats = self.stats
        try:
            for record in self.reader:
                kind = record.get("k")
                market = record.get("m")
                if kind == "open":
                    if record.get("s") == "orderbook" and market in self.markets:
                        self._last_seq[market] = None
                    continue
                if kind not in _REPLAYED or market not in self.markets:
                    continue
                frame = record.get("f")
                if not isinstance(frame, dict):
                    stats.bad_frames += 1
                    continue
                world, deliver = self._times(record, frame)
                if self._pending and (len(self._pending) > 1 or next(iter(self._pending.values()))["end"] <= world):
                    self._flush_pending(before_ms=world)
                when = self._t0 + (world - self.start_ms) / 1000.0
                if self._outq and self._outq[0][0] < when:
                    await self._release(when, clock)
                if self._others_blocked and when <= self._next_deadline and clock is not None:
                    if when > clock.current_time():  # nothing can happen before `when`: move there
                        _jump_to(clock, when)
                else:
                    await self._advance_to(when, clock)
                self._apply(kind, market, frame, world, self._trio_time(deliver), deliver)
                stats.frames[kind] += 1
                if kind == "orderbook":
                    stats.market_frames[market] += 1
                stats.last_ms = world
            self._flush_pending(before_ms=None)
            # The data ends when its last frame has been delivered (feed latency), not before.
            end = self._trio_time(self._last_deliver_ms)
            await self._release(math.nextafter(end, math.inf), clock)
            await trio.sleep_until(end)
            self.finished.set()
            await self._release(math.inf, clock)  # a last merged window may be due later
        finally:
            self.finished.set()

    # -- conflation ------------------------------------------------------------------------------
    def _conflate(self, market: str, frame: dict[str, Any], data: dict[str, Any], deliver_ms: int) -> None:
        """Merge a DELTA into its market's open window (a level's last absolute size wins)."""
        step = self.book_interval_ms
        end = (deliver_ms // step + 1) * step
        pending = self._pending.get(market)
        if pending is not None and pending["end"] != end:
            self._flush_market(market)
            pending = None
        if pending is None:
            pending = self._pending[market] = {"end": end, "b": {}, "a": {}, "ts": frame.get("ts"), "frames": 0}
        else:
            pending["ts"] = frame.get("ts")
        pending["frames"] += 1
        for key in ("b", "a"):
            news = data.get(key)
            if not news:
                continue
            levels = pending[key]
            for level in news:
                price = level["p"]
                before = levels.get(price)
                if before is None or "c" in level or "q" not in level or "q" not in before:
                    # (recorded levels are not modified anywhere: kept as they are)
                    if before is not None and "q" in before and "q" in level:
                        level = {**level, "q": str(Decimal(before["q"]) + Decimal(level["q"]))}
                    levels[price] = level
                else:  # changes without absolute sizes add up
                    levels[price] = {**before, "q": str(Decimal(before["q"]) + Decimal(level["q"]))}

    def _flush_market(self, market: str) -> None:
        pending = self._pending.pop(market)
        data = {"t": "DELTA", "m": market, "b": list(pending["b"].values()), "a": list(pending["a"].values())}
        self.stats.conflated_frames += pending["frames"] - 1
        self._deliver("orderbook", market, {"type": "DELTA", "data": data, "ts": pending["ts"]},
                      self._trio_time(pending["end"]), snapshot=False)

    def _flush_pending(self, *, before_ms: int | None) -> None:
        """Deliver the windows that close at or before `before_ms` (None: all)."""
        due = [m for m, p in self._pending.items() if before_ms is None or p["end"] <= before_ms]
        for market in due:
            self._flush_market(market)

    def _apply(self, kind: str, market: str, frame: dict[str, Any], world_ms: int, due: float,
               deliver_ms: int = 0) -> None:
        now_ms = self.runner.now_ms()
        data: Any = frame.get("data")  # untrusted: a bad shape is caught below and skipped
        try:
            if kind == "orderbook":
                self._apply_book(market, frame, data, now_ms, due, deliver_ms)
            elif kind == "trades":
                book = self.engine.books[market]
                prints = parse_prints(data, book.spec, book.ticks, book.lots)
                if self.engine.on_prints(market, prints, now_ms):
                    self._others_blocked = False  # fills: the account stream wakes
                    self.runner.pump()
                self._deliver(kind, market, frame, due, snapshot=False)
            elif kind == "funding":
                self.engine.set_funding_rate(market, Decimal(str(data["f"])))
                self._deliver(kind, market, frame, due, snapshot=False)
            else:
                price = Decimal(str(data["p"]))
                if not price.is_finite() or price <= 0:
                    raise ValueError(f"mark price {price}")
                self._has_mark.add(market)
                self._last_mark[market] = price
                self.engine.set_recorded_mark(market, price)
                self._deliver(kind, market, frame, due, snapshot=False)
        except (BadFrame, KeyError, TypeError, ValueError, InvalidOperation) as exc:
            self.stats.bad_frames += 1
            logger.warning("replay {}/{}: frame skipped: {}", kind, market, exc)

    def _apply_book(
        self, market: str, frame: dict[str, Any], data: Any, now_ms: int, due: float, deliver_ms: int = 0
    ) -> None:
        frame_type = frame.get("type") or (data.get("t") if isinstance(data, dict) else None)
        seq = frame.get("seq")
        last = self._last_seq.get(market)
        book = self.engine.books[market]
        if (
            frame_type == "DELTA"
            and last is not None
            and isinstance(seq, int)
            and seq != last + 1
            and book.valid
        ):
            # Frames were lost while recording: the recorded book is unknown until a snapshot.
            self.stats.book_gaps += 1
            book.invalidate()
        self._last_seq[market] = seq if isinstance(seq, int) else None
        if not isinstance(data, dict):
            raise BadFrame(f"{market} book frame without data")
        was_valid = book.valid
        valid = self.engine.on_book(market, frame_type, data, now_ms)
        if market in self._pending and (not valid or frame_type != "DELTA"):
            self._flush_market(market)  # the window's deltas go before a snapshot
        if valid:
            if self.book_interval_ms > 0 and frame_type == "DELTA" and was_valid:
                self._conflate(market, frame, data, deliver_ms)
            else:
                self._deliver("orderbook", market, frame, due, snapshot=frame_type == "SNAPSHOT")
            if market not in self._has_mark and book.mid is not None:
                self.engine.set_recorded_mark(market, Decimal(f"{book.mid:.10g}"))


# -- the port ---------------------------------------------------------------------------------


class ReplayVenue(PublicStreams):
    """`ExchangePort`: public streams from the recording, everything else from the engine."""

    def __init__(self, inner: InProcessVenue, driver: ReplayDriver) -> None:
        self._inner = inner
        self._driver = driver

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def account_id(self) -> int:
        return self._inner.account_id

    @asynccontextmanager
    async def _stream(self, kind: str, market: str, *, check_seq: bool) -> AsyncIterator[InProcessStream]:
        if market not in self._driver.markets:
            raise OrderRejected(1001, f"market {market!r} not found", 404)
        sub = self._driver.subscribe(kind, market)
        try:
            yield InProcessStream(sub, check_seq=check_seq)
        finally:
            self._driver.unsubscribe(sub)


@attrs.frozen(kw_only=True)
class Replay:
    venue: ReplayVenue
    engine: ReplayEngine
    runner: SimRunner
    driver: ReplayDriver
    reader: RecordingReader

    @property
    def finished(self) -> trio.Event:
        return self.driver.finished

    def now_ms(self) -> int:
        return self.runner.now_ms()


def _start_ms(reader: RecordingReader) -> int:
    for record in reader:
        t = record.get("t")
        if isinstance(t, int) and record.get("k") != "header":
            return t
    raise RecordingError(f"{reader.paths[0]}: the recording holds no frames")


@asynccontextmanager
async def replay_venue(
    paths: Sequence[Path | str],
    *,
    markets: Sequence[str] | None = None,
    balance: Decimal | int = Decimal(100_000),
    order_latency_s: float = 0.0,
    feed_latency_s: float | None = None,
    runner_tick_s: float = 0.1,
    seed: int = 0,
    maker_fee: Decimal = Decimal("0.0000"),
    taker_fee: Decimal = Decimal("0.00025"),
    from_ms: int | None = None,
    book_interval_ms: int = 0,
) -> AsyncIterator[Replay]:
    """Engine, runner, driver and port over a recording, running in this trio run's nursery."""
    files = expand_parts(paths)
    names = list(markets) if markets is not None else list(RecordingReader(files).markets)
    probe = RecordingReader(files)
    missing = [n for n in names if n not in probe.markets]
    if missing:
        raise RecordingError(
            f"market(s) {', '.join(missing)} not in the recording (it has {', '.join(sorted(probe.markets)) or 'none'})"
        )
    start_ms = _start_ms(probe)
    if from_ms is not None and from_ms > start_ms:
        # A later window (walk-forward): what comes before `from_ms` is applied at once (books,
        # marks, funding; nobody subscribed yet), and the run starts at `from_ms`.
        start_ms = from_ms
    config = EngineConfig(
        seed=seed,
        verify_signatures=False,
        strict_nonce=False,
        synthetic_flow=False,
        maker_fee=maker_fee,
        taker_fee=taker_fee,
    )
    engine = ReplayEngine(config, start_ms=start_ms, markets=[probe.markets[n] for n in names])
    info = engine.create_account(balance=balance)
    # The recorded book reaches the bot through the driver; the runner's own book flush has
    # no subscriber here (it only drains the engine's level changes of our orders), so it
    # need not wake the runner between its ticks.
    runner = SimRunner(engine, seed=seed, tick_s=runner_tick_s, book_interval_s=runner_tick_s)
    reader = RecordingReader(files)
    driver = ReplayDriver(
        engine, runner, reader, markets=names, start_ms=start_ms, feed_latency_s=feed_latency_s,
        book_interval_ms=book_interval_ms,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await nursery.start(driver.run)
        venue = ReplayVenue(InProcessVenue(runner, info, latency_s=order_latency_s), driver)
        yield Replay(venue=venue, engine=engine, runner=runner, driver=driver, reader=reader)
        nursery.cancel_scope.cancel()
