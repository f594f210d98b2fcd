"""Runs a `SimEngine` in trio time and fans its events out to stream subscribers.

`SimRunner` owns the engine: every `tick_s` it advances the engine to the current epoch
time (a fixed offset plus `trio.current_time()`, so `MockClock` drives it too), drains
the event outbox into per-subscription frame queues, and every `book_interval_s` (100 ms)
publishes order-book deltas. Subscriptions are transport-neutral (bounded memory
channels of ready JSON text with a per-connection `seq`): the WebSocket endpoints and the
in-process port read the same frames.
`extmm.sim.server.serve_simulator` serves engine and runner on a socket.

Stream rules (SPEC §5): a book stream opens with a SNAPSHOT (`q` only), then DELTAs (signed
`q`, absolute `c`) when something changed, an empty DELTA as a heartbeat after a second of
quiet, and a fresh SNAPSHOT every 60 s; `seq` starts at 1 on each connection and runs on
across snapshots. The account stream opens with ORDER, BALANCE and POSITION snapshots
(`isSnapshot: true`) and is then silent until something of the account changes (SPEC
§5.8; keep-alive is the server's WebSocket ping every 15 s). Mark frames are sent at the
engine's mark cadence (1 s); funding frames at most one a minute per market: the
per-minute estimate, and the hourly applied rate instead of the estimate due with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
import trio

from extmm.sim import wire
from extmm.sim.book import LevelUnits
from extmm.sim.engine import SimEngine
from extmm.sim.faults import FaultController, FaultSpec
from extmm.sim.model import (
    AccountEvent,
    AccountInfo,
    BalanceEvent,
    FundingRateEvent,
    FundingRatePoint,
    IndexPriceEvent,
    MarkPriceEvent,
    OrderStateEvent,
    PositionEvent,
    PublicTradesEvent,
    TradeEvent,
)
from extmm.sim.ratebudget import AddressBudget
from extmm.sim.subscription import CLOSE_NORMAL, CLOSE_RESTART, OutFrame, StreamKind, Subscription


def _dumps(value: Any) -> str:
    """Compact JSON text (orjson; the stdlib for what orjson refuses, e.g. ints beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


class SimRunner:
    """Owns a `SimEngine` inside a trio run: time, fan-out of events, fault decisions."""

    def __init__(
        self,
        engine: SimEngine,
        *,
        faults: FaultController | FaultSpec | None = None,
        seed: int = 0,
        tick_s: float = 0.05,
        book_interval_s: float = 0.1,
        snapshot_interval_s: float = 60.0,
        heartbeat_s: float = 1.0,
        queue_capacity: int = 256,
        market_data_latency_s: float = 0.0,
    ) -> None:
        self.engine = engine
        # Public streams (not the account stream) are delivered this much later (backtests).
        self.market_data_latency_s = market_data_latency_s
        self._t0 = trio.current_time()
        self._epoch_at_t0 = engine.now_ms
        if isinstance(faults, FaultController):
            self.faults = faults
        else:
            self.faults = FaultController(faults, seed=seed, clock=trio.current_time)
        self.faults.attach(drop_connections=self.drop_connections, fire_dms=self._fire_dms)
        self.tick_s = tick_s
        self.book_interval_s = book_interval_s
        self.snapshot_interval_s = snapshot_interval_s
        self.heartbeat_s = heartbeat_s
        self.queue_capacity = queue_capacity
        self.market_names = frozenset(engine.market_names())
        self._subs: dict[tuple[StreamKind, str | int | None], set[Subscription]] = {}
        # Per market: level changes drained from the engine, not yet published (stalls).
        self._pending_changes: dict[str, list[tuple[list[LevelUnits], list[LevelUnits]]]] = {}
        self._texts: dict[str, tuple[Callable[[int], str], Callable[[int], str]]] = {}
        self._next_drop_at: float | None = None
        self.frames_sent = 0
        # Frozen: the engine stops advancing on its own (REST calls still move it); book
        # frames keep flowing, so a client catches up and then sees only heartbeats.
        self.frozen = False
        # Per-address REST budget (SPEC §7), set by the server (`serve_simulator`).
        self.ip_budget: AddressBudget | None = None
        self._last_funding_ms: dict[str, int] = {}
        # Public streams from elsewhere (live market data): subscribe/unsubscribe go there.
        self.public_feed: Any = None

    # -- time ----------------------------------------------------------------------------
    def now_ms(self) -> int:
        """Epoch ms of the simulation: engine start + trio time elapsed since we started."""
        return self._epoch_at_t0 + int((trio.current_time() - self._t0) * 1000)

    @property
    def t0(self) -> float:
        """The trio time `now_ms` counts from (for callers that know the clock's time)."""
        return self._t0

    @property
    def epoch_at_t0(self) -> int:
        """`now_ms()` at trio time `t0`."""
        return self._epoch_at_t0

    def step(self) -> None:
        """Advance the engine to now (unless frozen) and publish what happened (no book deltas)."""
        if not self.frozen:
            self.engine.advance(self.now_ms())
        self.pump()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Advance the engine and publish, forever. Start with `nursery.start`."""
        task_status.started()
        next_tick = trio.current_time()
        next_books = next_tick
        while True:
            now = trio.current_time()
            self.step()
            if now >= next_books:
                self.flush_books()
                next_books = max(next_books + self.book_interval_s, now)
            self._periodic_drops(now)
            next_tick = max(next_tick + self.tick_s, now)
            await trio.sleep_until(min(next_tick, next_books))

    def _periodic_drops(self, now: float) -> None:
        every = self.faults.spec.ws_drop_every_s
        if not every:
            self._next_drop_at = None
            return
        if self._next_drop_at is None:
            self._next_drop_at = now + every
        elif now >= self._next_drop_at:
            self.faults.drop_connections()
            self._next_drop_at = now + every

    # -- auth ------------------------------------------------------------------------------
    def authenticate(self, api_key: str | None) -> AccountInfo:
        return self.engine.authenticate(api_key)

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(
        self,
        kind: StreamKind,
        *,
        market: str | None = None,
        account_id: int | None = None,
        depth_one: bool = False,
        capacity: int | None = None,
    ) -> Subscription:
        """Register a stream consumer; its first frames are queued at once or at the next flush."""
        if kind != "account" and self.public_feed is not None:
            feed_sub: Subscription = self.public_feed.subscribe(kind, market)  # live market data (extmm.runtime.marketdata)
            return feed_sub
        sub = Subscription(
            kind,
            market=market,
            account_id=account_id,
            depth_one=depth_one,
            capacity=capacity or self.queue_capacity,
        )
        if kind == "account":
            if account_id is None:
                raise ValueError("an account stream needs account_id")
            # Publish what is pending first: the snapshot must not be followed by updates it contains.
            self.step()
            self._subs.setdefault(("account", account_id), set()).add(sub)
            self._send_account_snapshot(sub)
            return sub
        markets = [market] if market is not None else sorted(self.market_names)
        for name in markets:
            if kind == "orderbook":
                sub.snapshot_owed.add(name)
            self._subs.setdefault((kind, name), set()).add(sub)
        if kind in ("mark", "index"):
            # A price stream starts with the current value rather than up to a second of silence.
            msg_type, price_of = (
                ("MP", self.engine.mark_price) if kind == "mark" else ("IP", self.engine.index_price)
            )
            now = self.now_ms()
            for name in markets:
                self._emit(sub, msg_type, _dumps(wire.mark_price(name, price_of(name))), now)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close(CLOSE_NORMAL, "unsubscribed")
        if self.public_feed is not None:
            self.public_feed.unsubscribe(sub)
        for subs in self._subs.values():
            subs.discard(sub)

    def subscriptions(self) -> list[Subscription]:
        seen: dict[int, Subscription] = {}
        for subs in self._subs.values():
            for sub in subs:
                seen[id(sub)] = sub
        return list(seen.values())

    def statistics(self) -> dict[str, Any]:
        """Counters for tests, logs and metrics: subscriptions by kind, frames, injected faults."""
        by_kind: dict[str, int] = {}
        for sub in self.subscriptions():
            by_kind[sub.kind] = by_kind.get(sub.kind, 0) + 1
        return {"subscriptions": by_kind, "frames_sent": self.frames_sent, "faults": self.faults.statistics()}

    def drop_connections(self) -> int:
        """Close every stream subscription (fault: WebSocket drop)."""
        subs = self.subscriptions()
        for sub in subs:
            sub.close(CLOSE_RESTART, "connection dropped (fault injection)")
            self.unsubscribe(sub)
        return len(subs)

    def _fire_dms(self, api_key: str | None) -> int:
        now = self.now_ms()
        fired = 0
        for info in self.engine.accounts():
            if api_key is not None and info.api_key != api_key:
                continue
            if self.engine.dms_deadline(info.id) is not None:
                self.engine.fire_dms(info.id, now)
                fired += 1
        self.pump()
        return fired

    # -- fan-out ---------------------------------------------------------------------------
    def _emit(self, sub: Subscription, msg_type: str | None, data_json: str, ts: int) -> None:
        """Wrap pre-serialised `data` in the v1 envelope with this connection's next `seq`."""
        faults = self.faults.frame_faults()
        due = trio.current_time() + self.faults.stream_latency_s()
        if sub.kind != "account":
            due += self.market_data_latency_s
        if faults.garbage is not None:
            sub.push(OutFrame(faults.garbage, due))
        sub.seq += 1 + faults.extra_seq
        head = f'{{"type":"{msg_type}",' if msg_type is not None else "{"
        if sub.push(OutFrame(f'{head}"data":{data_json},"ts":{ts},"seq":{sub.seq}}}', due)):
            self.frames_sent += 1

    def _fan_out(
        self, key: tuple[StreamKind, str | int | None], msg_type: str | None, data: Any, ts: int
    ) -> None:
        subs = self._subs.get(key)
        if not subs:
            return
        data_json = _dumps(data)
        for sub in list(subs):
            self._emit(sub, msg_type, data_json, ts)
            if sub.closed:
                subs.discard(sub)

    def pump(self) -> None:
        """Drain the engine's outbox into the subscribers' queues."""
        events = self.engine.drain_events()
        if not events:
            return
        marks: dict[str, MarkPriceEvent] = {}
        indexes: dict[str, IndexPriceEvent] = {}
        account_batch: list[AccountEvent] = []
        for event in events:
            if isinstance(event, OrderStateEvent | TradeEvent | PositionEvent | BalanceEvent):
                account_batch.append(event)
                continue
            self._flush_account_batch(account_batch)
            if isinstance(event, PublicTradesEvent):
                if self._subs.get(("trades", event.market)):  # rendering prints is not free
                    self._fan_out(("trades", event.market), None, wire.public_trades(event.trades), event.ts)
            elif isinstance(event, MarkPriceEvent):
                marks[event.market] = event
            elif isinstance(event, IndexPriceEvent):
                indexes[event.market] = event
            elif isinstance(event, FundingRateEvent):
                # At most one funding frame a minute per market, the hourly applied rate
                # always (SPEC §5.5: DOC26 says applied rates only; CAP-v1a saw about one
                # frame a minute; the bot must live with either).
                last = self._last_funding_ms.get(event.market)
                spacing = self.engine.config.funding_estimate_interval_ms  # 60 s by default
                if not event.applied and last is not None and event.ts - last < spacing:
                    continue
                self._last_funding_ms[event.market] = event.ts
                point = FundingRatePoint(market=event.market, rate=event.rate, ts=event.ts)
                self._fan_out(("funding", event.market), None, wire.funding_rate(point), event.ts)
        self._flush_account_batch(account_batch)
        # Several marks in one drain (virtual time jumps): only the newest matters.
        for event in marks.values():
            self._fan_out(("mark", event.market), "MP", wire.mark_price(event.market, event.price), event.ts)
        for event in indexes.values():
            self._fan_out(("index", event.market), "IP", wire.mark_price(event.market, event.price), event.ts)

    def _flush_account_batch(self, batch: list[AccountEvent]) -> None:
        """One frame per run of same-typed events of one account, in the engine's order."""
        if not batch:
            return
        runs: list[tuple[int, str, list[Any], int]] = []
        for event in batch:
            if not self._subs.get(("account", event.account_id)):
                continue  # nobody listens: do not render
            if isinstance(event, OrderStateEvent):
                kind, item = "ORDER", wire.order(event.order)
            elif isinstance(event, TradeEvent):
                kind, item = "TRADE", wire.trade(event.trade, stream=True)
            elif isinstance(event, PositionEvent):
                kind, item = "POSITION", wire.position(event.position)
            else:
                assert isinstance(event, BalanceEvent)
                kind, item = "BALANCE", wire.balance(event.balance)
            if runs and runs[-1][0] == event.account_id and runs[-1][1] == kind:
                runs[-1][2].append(item)
                continue
            runs.append((event.account_id, kind, [item], event.ts))
        batch.clear()
        for account_id, kind, items, ts in runs:
            payload = items[-1] if kind == "BALANCE" else items
            self._fan_out(("account", account_id), kind, wire.account_stream_data(kind, payload), ts)

    def _send_account_snapshot(self, sub: Subscription) -> None:
        assert sub.account_id is not None
        engine = self.engine
        now = engine.now_ms
        orders = [wire.order(o) for o in engine.open_orders(sub.account_id)]
        balance = wire.balance(engine.balance(sub.account_id))
        positions = [wire.position(p) for p in engine.positions(sub.account_id)]
        self._emit(sub, "ORDER", _dumps(wire.account_stream_data("ORDER", orders, is_snapshot=True)), now)
        self._emit(
            sub, "BALANCE", _dumps(wire.account_stream_data("BALANCE", balance, is_snapshot=True)), now
        )
        self._emit(
            sub, "POSITION", _dumps(wire.account_stream_data("POSITION", positions, is_snapshot=True)), now
        )

    # -- order books -------------------------------------------------------------------------
    def flush_books(self) -> None:
        """Publish book changes since the last flush: deltas, owed and periodic snapshots."""
        for market, bids, asks in self.engine.drain_level_changes():
            if self._subs.get(("orderbook", market)):
                self._pending_changes.setdefault(market, []).append((bids, asks))
        now = trio.current_time()
        ts = self.engine.now_ms
        for market in sorted(self.market_names):
            subs = self._subs.get(("orderbook", market))
            if not subs:
                self._pending_changes.pop(market, None)
                continue
            if self.faults.books_stalled(market):
                continue  # hold the changes back; they go out merged after the stall
            merged = _merge_level_changes(self._pending_changes.pop(market, []))
            self._publish_book(market, subs, merged, now, ts)

    def _text(self, market: str) -> tuple[Callable[[int], str], Callable[[int], str]]:
        """Price and size text of `market`'s ticks and lots (memoised per runner)."""
        texts = self._texts.get(market)
        if texts is None:
            spec = self.engine.market_spec(market)
            texts = self._texts[market] = (
                wire.UnitText(spec.ticks_to_price).__getitem__,
                wire.UnitText(spec.lots_to_qty).__getitem__,
            )
        return texts

    def _snapshot_json(self, market: str, depth: int | None = None) -> str:
        bids, asks = self.engine.book_levels(market, depth)
        level_depth = "f" if depth is None else "1"
        return _dumps(wire.book_snapshot_levels(market, bids, asks, *self._text(market), depth=level_depth))

    def _publish_book(
        self,
        market: str,
        subs: set[Subscription],
        merged: tuple[list[LevelUnits], list[LevelUnits]] | None,
        now: float,
        ts: int,
    ) -> None:
        delta_json: str | None = None
        if merged is not None:
            delta_json = _dumps(wire.book_delta_levels(market, *merged, *self._text(market)))
        snapshot_json: str | None = None
        empty_json: str | None = None
        top_json: str | None = None
        top: Any = None
        for sub in list(subs):
            if sub.depth_one:
                if top is None:
                    top = self.engine.book_levels(market, 1)
                    top_json = self._snapshot_json(market, 1)
                if sub.last_top.get(market) != top or market in sub.snapshot_owed:
                    sub.snapshot_owed.discard(market)
                    sub.last_top[market] = top
                    assert top_json is not None
                    self._emit(sub, "SNAPSHOT", top_json, ts)
            elif market in sub.snapshot_owed or now >= sub.next_snapshot_at.get(market, float("inf")):
                if snapshot_json is None:
                    snapshot_json = self._snapshot_json(market)
                sub.snapshot_owed.discard(market)
                sub.next_snapshot_at[market] = now + self.snapshot_interval_s
                sub.last_frame_at[market] = now
                self._emit(sub, "SNAPSHOT", snapshot_json, ts)
            elif delta_json is not None:
                sub.last_frame_at[market] = now
                self._emit(sub, "DELTA", delta_json, ts)
            elif now - sub.last_frame_at.get(market, now) >= self.heartbeat_s:
                if empty_json is None:
                    empty_json = _dumps(wire.empty_book_delta(market))
                sub.last_frame_at[market] = now
                self._emit(sub, "DELTA", empty_json, ts)
            if sub.closed:
                subs.discard(sub)


def _merge_level_changes(
    drained: Sequence[tuple[list[LevelUnits], list[LevelUnits]]],
) -> tuple[list[LevelUnits], list[LevelUnits]] | None:
    """Several drains of one market's level changes as one (signed changes add, last size wins)."""
    if not drained:
        return None
    if len(drained) == 1:
        return drained[0]

    def merge(sides: Iterable[list[LevelUnits]], descending: bool) -> list[LevelUnits]:
        acc: dict[int, list[int]] = {}
        for side in sides:
            for price, change, lots in side:
                entry = acc.get(price)
                if entry is None:
                    acc[price] = [change, lots]
                else:
                    entry[0] += change
                    entry[1] = lots
        merged = [(price, d, q) for price, (d, q) in acc.items() if d != 0]
        merged.sort(reverse=descending)
        return merged

    bids = merge((b for b, _ in drained), True)
    asks = merge((a for _, a in drained), False)
    if not bids and not asks:
        return None
    return bids, asks
