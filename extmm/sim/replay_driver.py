"""The replay driver: walks a recording in (virtual) time and delivers its frames.

`ReplayDriver` applies each recorded frame to the `ReplayEngine` (`extmm.sim.replay_engine`)
at its exchange timestamp and delivers it to the bot's subscriptions re-sequenced, at the
recorded receive time or `feed_latency_s` after the exchange timestamp; book deltas are
merged per `book_interval_ms` window as the venue pushes them. Frames due later wait in the
driver's delivery queue, not in the subscriptions' channels. Order latency is the
in-process port's per-request delay (`extmm.sim.replay.replay_venue`).

Under the backtests' `VirtualClock` the walk is not a task's loop but the clock's idle
hook (`ReplayDriver._step`): when no task can run, it applies frames in time order up to
the first one that wakes a task or the next timer, whichever is first, so replaying a
frame costs no task switch of its own (the driver's task only waits for the end of the
data). Under any other clock (`MockClock`, the real one) the same walk runs as a task
that sleeps, or jumps an autojumping clock, to each frame (`_walk`).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs
import orjson
import trio
import trio.testing
from loguru import logger
from trio._core._run import GLOBAL_RUN_CONTEXT

from extmm.domain.l2 import BadFrame, parse_prints
from extmm.sim.clock import VirtualClock
from extmm.sim.recording import RecordingReader
from extmm.sim.replay_engine import ReplayEngine
from extmm.sim.runner import SimRunner
from extmm.sim.subscription import OutFrame, Subscription

_REPLAYED = frozenset(("orderbook", "trades", "funding", "mark"))
# A frame ready to apply: (trio time, kind, market, frame, world ms, delivery ms).
_Due = tuple[float, str, str, dict[str, Any], int, int]


class _Window:
    """A market's book deltas of one delivery window, merged by price (`ReplayDriver._conflate`)."""

    __slots__ = ("a", "b", "end", "frames", "ts")

    def __init__(self, end: int, ts: Any) -> None:
        self.end = end  # delivery ms: the window closes then
        self.ts = ts  # the last merged frame's "ts"
        self.frames = 0
        # price text → the merged level
        self.b: dict[Any, dict[str, Any]] = {}
        self.a: dict[Any, dict[str, Any]] = {}


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
        self._pending: dict[str, _Window] = {}  # market → the merged delta of the open window
        self._others_blocked = False  # see _advance_to
        self._next_deadline = 0.0  # trio time of the earliest timer while _others_blocked
        # Frames waiting for their delivery time (see _push): (due, n, subscription, frame).
        self._outq: list[tuple[float, int, Subscription, OutFrame]] = []
        self._queued: dict[Subscription, tuple[int, float]] = {}  # frames waiting, the last one's time
        self._pushed = 0
        self._records: Iterator[dict[str, Any]] = iter(())
        # The walk on a VirtualClock's idle hook (`_step`): the next frame, and how it ended.
        self._clock: VirtualClock | None = None
        self._due: _Due | None = None
        self._walked = trio.Event()
        self._step_error: Exception | None = None

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
                self._pop_held()

    def _pop_held(self) -> None:
        """Push the earliest held frame."""
        _, _, sub, out = heapq.heappop(self._outq)
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

    def _next_record(self) -> _Due | None:
        """The next frame to apply, read and timed (None: the data ended). Merged book
        windows that close before it are handed to delivery first."""
        markets = self.markets
        for record in self._records:
            kind = record.get("k")
            market = record.get("m")
            if kind == "open":
                if record.get("s") == "orderbook" and market in markets:
                    self._last_seq[market] = None
                continue
            if kind not in _REPLAYED or market not in markets:
                continue
            frame = record.get("f")
            if not isinstance(frame, dict):
                self.stats.bad_frames += 1
                continue
            # The frame's (world ms, delivery ms), both monotone.
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
            if self._pending:
                for window in self._pending.values():
                    if window.end <= world:  # (one market's window open: a loop of one)
                        self._flush_pending(before_ms=world)
                        break
            when = self._t0 + (world - self.start_ms) / 1000.0
            return when, kind, market, frame, world, deliver
        return None

    def _apply_due(self, due: _Due, now_ms: int | None = None) -> None:
        """Apply a frame from `_next_record` (`now_ms`: the runner's `now_ms()`, if known)."""
        _, kind, market, frame, world, deliver = due
        stats = self.stats
        if kind == "orderbook":  # `_apply`'s book branch, inline (most frames)
            if now_ms is None:
                now_ms = self.runner.now_ms()
            data = frame.get("data")
            try:
                seq = frame.get("seq")
                last = self._last_seq.get(market)
                engine = self.engine
                book = engine.books[market]
                if (
                    type(seq) is int
                    and (last is None or seq == last + 1)
                    and type(data) is dict
                    and book.valid
                    and self.book_interval_ms > 0
                    and (frame.get("type") or data.get("t")) == "DELTA"
                ):
                    # `_apply_book` of the common frame, inline: a DELTA in sequence on a
                    # valid book, merged into its window.
                    self._last_seq[market] = seq
                    if engine.on_book(market, "DELTA", data, now_ms):
                        self._conflate(market, frame, data, deliver)
                        if market not in self._has_mark and book.mid is not None:
                            engine.set_recorded_mark(market, Decimal(f"{book.mid:.10g}"))
                    elif market in self._pending:
                        self._flush_market(market)
                else:
                    self._apply_book(market, frame, data, now_ms, self._trio_time(deliver), deliver)
            except (BadFrame, KeyError, TypeError, ValueError, InvalidOperation) as exc:
                stats.bad_frames += 1
                logger.warning("replay {}/{}: frame skipped: {}", kind, market, exc)
            stats.market_frames[market] += 1
        else:
            self._apply(kind, market, frame, world, self._trio_time(deliver), deliver)
        stats.frames[kind] += 1
        stats.last_ms = world

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._t0 = trio.current_time()
        self._records = iter(self.reader)
        current = trio.lowlevel.current_clock()
        autojumps = isinstance(current, VirtualClock) or (
            isinstance(current, trio.testing.MockClock) and current.autojump_threshold == 0
        )
        clock = current if autojumps else None
        task_status.started()
        try:
            if isinstance(current, VirtualClock) and current.idle_hook is None:
                await self._walk_on_idle(current)
            else:
                await self._walk(clock)
            self._flush_pending(before_ms=None)
            # The data ends when its last frame has been delivered (feed latency), not before.
            end = self._trio_time(self._last_deliver_ms)
            await self._release(math.nextafter(end, math.inf), clock)
            await trio.sleep_until(end)
            self.finished.set()
            await self._release(math.inf, clock)  # a last merged window may be due later
        finally:
            self.finished.set()

    async def _walk(self, clock: Any) -> None:
        """The walk as a task: sleeps (or jumps an autojumping clock) to each frame's time."""
        while (due := self._next_record()) is not None:
            when = due[0]
            if self._outq and self._outq[0][0] < when:
                await self._release(when, clock)
            if self._others_blocked and when <= self._next_deadline and clock is not None:
                if when > clock.current_time():  # nothing can happen before `when`: move there
                    _jump_to(clock, when)
            else:
                await self._advance_to(when, clock)
            self._apply_due(due)

    async def _walk_on_idle(self, clock: VirtualClock) -> None:
        """The walk under a `VirtualClock`: done by its idle hook (`_step`), no task switch
        per frame; this task waits until the data ends (or the step failed: raised here)."""
        self._clock = clock
        self._due = self._next_record()
        clock.idle_hook = self._step
        try:
            await self._walked.wait()
        finally:
            clock.idle_hook = None
        if self._step_error is not None:
            raise self._step_error

    def _step(self, deadline: float) -> None:
        """`VirtualClock.idle_hook`: no task can run and the earliest timer is at `deadline`.

        Applies frames (and pushes held ones) in time order, moving the clock to each, until
        one wakes a task (which then runs at that time) or the next is after `deadline` (the
        timer's task runs first; a frame due at the deadline itself goes before it, as in
        `_walk`). Frames held for later (`_outq`) go before a recorded frame of a later time.
        """
        runq = GLOBAL_RUN_CONTEXT.runner.runq
        clock = self._clock
        assert clock is not None
        q = self._outq
        apply_due, next_record = self._apply_due, self._next_record
        # `runner.now_ms()` without the look-up of trio's clock: it is `clock`.
        epoch0, t0 = self.runner.epoch_at_t0, self.runner.t0
        try:
            while not runq:
                due = self._due
                when = math.inf if due is None else due[0]
                if q:
                    held = q[0][0]
                    if held < when:
                        if held > deadline:
                            return
                        if held > clock.current_time():
                            clock.jump_to(held)
                        while q and q[0][0] <= held:
                            self._pop_held()
                        continue
                if due is None:
                    clock.idle_hook = None  # the rest (flush, the end of data) is the task's
                    self._walked.set()
                    return
                if when > deadline:
                    return
                now = clock.current_time()
                if when > now:
                    clock.jump_to(when)
                    now = when
                apply_due(due, epoch0 + int((now - t0) * 1000))
                self._due = next_record()
        except Exception as exc:  # surfaces in the driver's task, not inside trio's run loop
            clock.idle_hook = None
            self._step_error = exc
            self._walked.set()

    # -- conflation ------------------------------------------------------------------------------
    def _conflate(self, market: str, frame: dict[str, Any], data: dict[str, Any], deliver_ms: int) -> None:
        """Merge a DELTA into its market's open window (a level's last absolute size wins)."""
        step = self.book_interval_ms
        end = (deliver_ms // step + 1) * step
        window = self._pending.get(market)
        if window is not None and window.end != end:
            self._flush_market(market)
            window = None
        if window is None:
            window = self._pending[market] = _Window(end, frame.get("ts"))
        else:
            window.ts = frame.get("ts")
        window.frames += 1
        for levels, news in ((window.b, data.get("b")), (window.a, data.get("a"))):
            if not news:
                continue
            # A level's size changes ("q") add up, on the later level if it has an
            # absolute size ("c"), else on the earlier one.
            for level in news:
                price = level["p"]
                before = levels.get(price)
                if before is None or "q" not in level or "q" not in before:
                    levels[price] = level
                else:  # (recorded levels are not modified anywhere: a merged one is a new dict)
                    total = str(Decimal(before["q"]) + Decimal(level["q"]))
                    levels[price] = {**level, "q": total} if "c" in level else {**before, "q": total}

    def _flush_market(self, market: str) -> None:
        window = self._pending.pop(market)
        data = {"t": "DELTA", "m": market, "b": list(window.b.values()), "a": list(window.a.values())}
        self.stats.conflated_frames += window.frames - 1
        self._deliver("orderbook", market, {"type": "DELTA", "data": data, "ts": window.ts},
                      self._trio_time(window.end), snapshot=False)

    def _flush_pending(self, *, before_ms: int | None) -> None:
        """Deliver the windows that close at or before `before_ms` (None: all)."""
        due = [m for m, w in self._pending.items() if before_ms is None or w.end <= before_ms]
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
        is_dict = isinstance(data, dict)
        frame_type = frame.get("type") or (data.get("t") if is_dict else None)
        seq = frame.get("seq")
        last_seq = self._last_seq
        last = last_seq.get(market)
        engine = self.engine
        book = engine.books[market]
        if isinstance(seq, int):
            if frame_type == "DELTA" and last is not None and seq != last + 1 and book.valid:
                # Frames were lost while recording: the recorded book is unknown until a snapshot.
                self.stats.book_gaps += 1
                book.invalidate()
            last_seq[market] = seq
        else:
            last_seq[market] = None
        if not is_dict:
            raise BadFrame(f"{market} book frame without data")
        was_valid = book.valid
        valid = engine.on_book(market, frame_type, data, now_ms)
        delta = frame_type == "DELTA"
        if (not valid or not delta) and market in self._pending:
            self._flush_market(market)  # the window's deltas go before a snapshot
        if valid:
            if delta and was_valid and self.book_interval_ms > 0:
                self._conflate(market, frame, data, deliver_ms)
            else:
                self._deliver("orderbook", market, frame, due, snapshot=frame_type == "SNAPSHOT")
            if market not in self._has_mark and book.mid is not None:
                engine.set_recorded_mark(market, Decimal(f"{book.mid:.10g}"))
