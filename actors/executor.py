"""Executor: owns this market's live orders and makes them match Risk's approved targets.

Before it quotes (first start and every restart) it reconciles with the venue: our
prefixed orders left open in this market are cancelled and confirmed gone. Then one
worker per side diffs target against live order (`extmm.domain.execution.decide`) and
places, replaces (new order with `cancelId`) or cancels — one request in flight per side
at most. Every order is tracked through `extmm.domain.orders` to its final state from
REST answers and account-stream updates; a periodic reconciliation against the venue's
open orders cancels any orphan and settles ambiguous outcomes by externalId.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from decimal import Decimal

import attrs
import trio
from loguru import logger

from actors.messages import Approved, ExecIn, FillEvent, OrderEvent
from extmm.domain import orders as om
from extmm.domain.execution import Action, ActionKind, LiveOrder, SideTarget, decide
from extmm.domain.stats import nearest_rank
from extmm.domain.units import MarketSpec, Rounding, Side
from extmm.journal.actor import Journal
from extmm.journal.hooks import order_row
from extmm.ops.telemetry import ExecStats, LiveOrderView, Telemetry
from extmm.venue.errors import OrderRejected, RateLimited, VenueError
from extmm.venue.network import placement_known
from extmm.venue.port import ExchangePort
from extmm.venue.signing import ExternalIdFactory, is_ours
from extmm.venue.types import OrderInfo, OrderRequest

# Application codes meaning "the order being replaced/cancelled is not there".
ROUTINE_REJECTIONS = ("POST_ONLY_FAILED", "PREV_ORDER_NOT_FOUND")
PREV_NOT_FOUND_CODES = frozenset({1142, "1142", "EditOrderNotFound", "PREV_ORDER_NOT_FOUND"})


@attrs.frozen(kw_only=True)
class ExecutorParams:
    stp: str
    post_only: bool
    replace_threshold_bps: float
    coalesce_s: float
    order_expiry_s: float
    maker_fee_rate: Decimal
    taker_fee_rate: Decimal
    prefix: str
    refresh_margin_s: float = 60.0  # replace an order this long before it expires
    stale_target_s: float = 5.0  # no approval for this long → cancel everything
    stale_book_s: float | None = None  # targets computed from a book older than this → cancel
    reconcile_every_s: float = 2.0
    in_flight_grace_s: float = 3.0  # an unacknowledged order younger than this is not looked up
    reject_pause_s: float = 1.0  # first pause after a rejection; doubles up to 30 s
    max_open_orders: int = 1_000_000  # never more orders that may be open than this
    levels: int = 1  # ladder levels a side (`markets[].levels`): one worker and one order each


class ReconcileFailed(Exception):
    """Our orders could not be confirmed gone before quoting; the supervisor retries."""


class _SideState:
    """One order slot: a side's ladder level (0 = nearest the touch)."""

    def __init__(self, side: Side, level: int = 0) -> None:
        self.side = side
        self.level = level
        self.target: SideTarget | None = None
        self.live: str | None = None  # external id of this side's current order
        self.wake = trio.Event()
        self.reject_streak = 0
        self.retry_at = 0.0  # after a rejection, no new order on this side before this time
        self.needs_approval = False  # filled since the last approval: Risk must judge again


class _Executor:
    def __init__(
        self,
        *,
        port: ExchangePort,
        spec: MarketSpec,
        params: ExecutorParams,
        ids: ExternalIdFactory,
        epoch_ms: Callable[[], int],
        telemetry: Telemetry,
        journal: Journal | None = None,
    ) -> None:
        self.journal = journal or Journal.disabled()
        self.port = port
        self.spec = spec
        self.market = spec.name
        self.p = params
        self.ids = ids
        self.epoch_ms = epoch_ms
        self.telemetry = telemetry
        self.records: dict[str, om.OrderRecord] = {}
        # Index of `records` that may rest at the venue: the per-order checks (open-order
        # cap, telemetry) must not scan the settled history, thousands long at high rates.
        self.open_ids: dict[str, None] = {}  # insertion-ordered set
        self.sides = {Side.BUY: _SideState(Side.BUY), Side.SELL: _SideState(Side.SELL)}
        # Every order slot, the first levels (`sides`) included; a ladder adds levels ≥ 1.
        self.slots: list[_SideState] = [*self.sides.values()] + [
            _SideState(side, level) for level in range(1, max(params.levels, 1)) for side in (Side.BUY, Side.SELL)
        ]
        self.last_approved_at = trio.current_time()
        self.book_updated_at: float | None = None  # of the book behind the current targets
        self.sent = self.replaces = self.cancels = self.rejects = self.orphans = 0
        self.reject_reasons: Counter[str] = Counter()
        self.latencies: deque[float] = deque(maxlen=512)
        self._latency_stats = (0.0, 0.0)  # p50, p99 ms, recomputed at most twice a second
        self._latency_stats_at = float("-inf")
        self.orphan_cancels_in_flight: set[str] = set()
        self.in_flight: set[str] = set()  # externalIds a place, replace or cancel is about

    # -- reconciliation --------------------------------------------------------------------
    async def reconcile_at_start(self, timeout_s: float = 10.0) -> None:
        with trio.move_on_after(timeout_s) as scope:
            while True:
                try:
                    open_orders = await self.port.get_open_orders(self.market)
                except VenueError as exc:
                    logger.warning("{}: start-up reconciliation: {}; retrying", self.market, exc)
                    await trio.sleep(0.5)
                    continue
                ours = [o for o in open_orders if is_ours(o.external_id, self.p.prefix)]
                others = len(open_orders) - len(ours)
                if others:
                    logger.warning("{}: {} open orders not made by extmm are left alone", self.market, others)
                if not ours:
                    logger.info("{}: reconciled, no open orders of ours", self.market)
                    return
                logger.info("{}: cancelling {} open orders of ours left from before", self.market, len(ours))
                self.orphans += len(ours)
                try:
                    await self.port.mass_cancel(external_ids=[o.external_id for o in ours])
                except VenueError as exc:
                    logger.warning("{}: start-up mass cancel: {}; retrying", self.market, exc)
                await trio.sleep(0.2)
        if scope.cancelled_caught:
            raise ReconcileFailed(f"{self.market}: our open orders did not go away within {timeout_s}s")

    async def reconcile_loop(self) -> None:
        while True:
            await trio.sleep(self.p.reconcile_every_s)
            try:
                await self.reconcile_once()
            except VenueError as exc:
                logger.warning("{}: reconciliation failed: {}", self.market, exc)
                self.publish()

    async def reconcile_once(self) -> None:
        now = trio.current_time()
        open_orders = await self.port.get_open_orders(self.market)
        venue_open = {o.external_id: o for o in open_orders if is_ours(o.external_id, self.p.prefix)}
        # Orphans: open at the venue, not tracked as possibly open by us.
        for ext, info in venue_open.items():
            rec = self.records.get(ext)
            if rec is not None and rec.may_be_open:
                self.on_venue_order(info)
                rec = self.records.get(ext)
                # Open, yet no side's order and no request about it in flight: our cancel
                # (or the replace that was to cancel it) did not take. (Its age cannot tell:
                # the venue update just applied has refreshed `updated_at`.)
                if (
                    rec is not None
                    and rec.may_be_open
                    and ext not in self.in_flight
                    and all(side.live != ext for side in self.slots)
                ):
                    logger.warning("{}: order {} still open after its cancel; cancelling again", self.market, ext)
                    self.apply(ext, om.CancelSent(at=now))
                    try:
                        await self.port.cancel_order_by_external_id(ext)
                    except VenueError as exc:
                        logger.warning("{}: repeated cancel of {} failed: {}", self.market, ext, exc)
                continue
            if ext in self.orphan_cancels_in_flight:
                continue
            self.orphans += 1
            logger.warning("{}: orphan order {} found open; cancelling", self.market, ext)
            self.orphan_cancels_in_flight.add(ext)
            try:
                await self.port.cancel_order_by_external_id(ext)
            except VenueError as exc:
                logger.warning("{}: orphan cancel of {} failed: {}", self.market, ext, exc)
            finally:
                self.orphan_cancels_in_flight.discard(ext)
        # Tracked as possibly open but not open at the venue: settle by externalId.
        for rec in self.open_records():
            ext = rec.external_id
            if ext in venue_open:
                continue
            if rec.state is om.OrderState.PENDING_NEW and now - rec.created_at < self.p.in_flight_grace_s:
                continue
            if now - rec.updated_at < self.p.in_flight_grace_s and not rec.needs_lookup:
                continue
            await self.lookup(ext)
        # Forget settled orders after a while (bounded memory).
        for ext, rec in list(self.records.items()):
            if rec.is_terminal and now - rec.updated_at > 60.0:
                self.forget(ext)
        self.publish()

    async def lookup(self, ext: str) -> None:
        found = await self.port.get_orders_by_external_id(ext)
        found = [o for o in found if o.external_id == ext]
        now = trio.current_time()
        if found:
            for info in found:
                self.on_venue_order(info)
        else:
            self.apply(ext, om.NotFound(at=now))

    # -- records ---------------------------------------------------------------------------
    def store(self, rec: om.OrderRecord) -> None:
        old = self.records.get(rec.external_id)
        if self.journal.enabled and (old is None or (old.state, old.filled_lots) != (rec.state, rec.filled_lots)):
            self.journal.record(order_row(self.journal, rec, self.spec))  # every state transition
        self.records[rec.external_id] = rec
        if rec.may_be_open:
            self.open_ids[rec.external_id] = None
        else:
            self.open_ids.pop(rec.external_id, None)

    def forget(self, ext: str) -> None:
        self.records.pop(ext, None)
        self.open_ids.pop(ext, None)

    def open_records(self) -> list[om.OrderRecord]:
        """The records that may rest at the venue (pending states included), oldest first."""
        return [self.records[ext] for ext in self.open_ids]

    # -- events ----------------------------------------------------------------------------
    def apply(self, ext: str, event: om.OrderEvent) -> None:
        rec = self.records.get(ext)
        if rec is None:
            return
        filled_before = rec.filled_lots
        try:
            rec = rec.apply(event)
        except om.OrderError as exc:
            logger.error("{}: order {}: {}; will look it up", self.market, ext, exc)
            rec = attrs.evolve(rec, needs_lookup=True)
        self.store(rec)
        if rec.filled_lots > filled_before:
            # Risk sized this side for the position before the fill: no new exposure here
            # until it has judged the new one (a silent Quoter would otherwise be refilled).
            for slot in self.slots:
                if slot.side is rec.side:
                    slot.needs_approval = True
        for side in self.slots:
            if side.live == ext and rec.is_terminal:
                side.live = None
                if rec.state is om.OrderState.REJECTED:
                    self.back_off(side, rec.status_reason or "REJECTED")
                side.wake.set()

    def on_venue_order(self, info: OrderInfo) -> None:
        rec = self.records.get(info.external_id)
        if rec is None:
            return  # not ours, or from before a restart (reconciliation handles it)
        filled = self.spec.qty_to_lots(info.filled_qty, Rounding.DOWN)
        self.apply(
            info.external_id,
            om.VenueUpdate(
                at=trio.current_time(),
                status=info.status,
                filled_lots=min(filled, rec.qty_lots),
                venue_id=info.id,
                status_reason=info.status_reason,
            ),
        )
        if info.status == "REJECTED":
            self.count_reject(info.status_reason or "REJECTED")
        elif info.status in ("NEW", "PARTIALLY_FILLED", "FILLED"):
            for side in self.slots:
                if side.live == info.external_id:
                    side.reject_streak = 0

    def on_approved(self, msg: Approved) -> None:
        self.last_approved_at = msg.decided_at or trio.current_time()
        self.book_updated_at = msg.book_updated_at
        for state in self.slots:
            target = msg.target(state.side, state.level)
            if state.target != target or state.needs_approval:
                state.target = target
                state.needs_approval = False
                state.wake.set()

    def stale_at(self) -> float:
        """When the current targets stop counting: no approval for `stale_target_s`, or
        their book older than `stale_book_s` (whether or not Quoter and Risk are alive)."""
        at = self.last_approved_at + self.p.stale_target_s
        if self.p.stale_book_s is not None and self.book_updated_at is not None:
            at = min(at, self.book_updated_at + self.p.stale_book_s)
        return at

    def count_reject(self, reason: str) -> None:
        self.rejects += 1
        self.reject_reasons[reason] += 1

    def may_be_open(self) -> int:
        return len(self.open_ids)

    # -- side workers ----------------------------------------------------------------------
    def live_view(self, state: _SideState) -> LiveOrder | None:
        if state.live is None:
            return None
        rec = self.records.get(state.live)
        if rec is None or rec.is_terminal or rec.state is om.OrderState.PENDING_CANCEL:
            state.live = None
            return None
        return LiveOrder(
            external_id=rec.external_id,
            ticks=rec.price_ticks,
            lots=rec.remaining_lots,
            placed_at=rec.created_at,
            expires_at=rec.created_at + max(self.p.order_expiry_s - self.p.refresh_margin_s, 1.0),
        )

    async def side_worker(self, state: _SideState) -> None:
        while True:
            now = trio.current_time()
            target = state.target
            stale_at = self.stale_at()
            if now > stale_at:
                target = None  # Risk/Quoter went quiet, or their book went stale: quotes down
            live = self.live_view(state)
            if live is not None and live.lots <= 0:
                live = None
            action = decide(
                target=target,
                live=live,
                now=now,
                replace_threshold_bps=self.p.replace_threshold_bps,
                coalesce_s=self.p.coalesce_s,
            )
            if action.kind in (ActionKind.PLACE, ActionKind.REPLACE) and now < state.retry_at:
                action = Action(kind=ActionKind.NONE, wait_s=state.retry_at - now, reason="backing off")
            elif action.kind in (ActionKind.PLACE, ActionKind.REPLACE) and state.needs_approval:
                # The approved size assumed the position before the last fill.
                action = Action(kind=ActionKind.NONE, reason="filled: waiting for Risk")
            elif action.kind in (ActionKind.PLACE, ActionKind.REPLACE) and self.may_be_open() >= self.p.max_open_orders:
                # Unsettled orders (cancel or place outcome unknown) still count: wait for
                # reconciliation to settle them rather than stack new ones on top.
                action = Action(kind=ActionKind.NONE, wait_s=0.5, reason="open-order cap")
            match action.kind:
                case ActionKind.PLACE:
                    assert action.target is not None  # decide() gives PLACE a target
                    await self.place(state, action.target)
                case ActionKind.REPLACE if live is not None and self.records[live.external_id].state is om.OrderState.PENDING_NEW:
                    # Its placement has an unknown outcome (timeout, 5xx): the venue cannot
                    # replace an order it may not have. Cancel it by externalId (a no-op if it
                    # never landed); the new price goes out as a fresh order after that.
                    await self.cancel(state, live.external_id)
                case ActionKind.REPLACE:
                    assert live is not None and action.target is not None  # decide() replaces a live order
                    await self.replace(state, live.external_id, action.target)
                case ActionKind.CANCEL:
                    assert live is not None  # decide() cancels a live order
                    await self.cancel(state, live.external_id)
                case ActionKind.NONE:
                    wait = action.wait_s if action.wait_s > 0 else self.p.stale_target_s
                    if target is not None:
                        wait = min(wait, stale_at - now + 0.001)  # wake when the targets go stale
                    if live is not None:
                        wait = min(wait, max(live.expires_at - now, 0.0) + 0.001)
                    # Never a zero wait: a timer that is already due would spin the loop.
                    with trio.move_on_after(max(wait, 0.001)):
                        await state.wake.wait()
                    state.wake = trio.Event()

    def request(self, side: Side, target: SideTarget, ext: str, cancel_id: str | None) -> OrderRequest:
        return OrderRequest(
            market=self.market,
            side=side,
            qty=self.spec.lots_to_qty(target.lots),
            price=self.spec.ticks_to_price(target.ticks),
            external_id=ext,
            expiry_ms=self.epoch_ms() + int(self.p.order_expiry_s * 1000),
            max_fee_rate=self.p.maker_fee_rate if self.p.post_only else self.p.taker_fee_rate,
            post_only=self.p.post_only,
            stp=self.p.stp,
            cancel_id=cancel_id,
        )

    def new_record(self, side: Side, target: SideTarget, replaces: str | None = None) -> str:
        ext = self.ids.next(self.market, side)
        now = trio.current_time()
        rec = om.OrderRecord.new(external_id=ext, market=self.market, side=side, price_ticks=target.ticks,
                                 qty_lots=target.lots, at=now, replaces=replaces)
        self.store(rec.apply(om.Sent(at=now)))
        return ext

    async def send(self, state: _SideState, ext: str, req: OrderRequest) -> bool:
        """Place (or replace); True when the venue acknowledged it."""
        started = trio.current_time()
        involved = {ext} if req.cancel_id is None else {ext, req.cancel_id}
        self.in_flight |= involved
        try:
            placed = await self.port.place_order(req)
        except OrderRejected as exc:
            self.refused(state, ext, str(exc.code), exc.venue_message, exc)
            return False
        except RateLimited as exc:
            self.count_reject("429")
            self.apply(ext, om.SendFailed(at=trio.current_time(), reason="rate limited"))
            state.retry_at = trio.current_time() + (exc.retry_after or 1.0)
            return False
        except VenueError as exc:
            if placement_known(exc) is False:
                self.apply(ext, om.SendFailed(at=trio.current_time(), reason=type(exc).__name__))
                self.back_off(state, exc)
                return False
            # Ambiguous: keep tracking; reconciliation settles it by externalId.
            logger.warning("{}: place of {} has an unknown outcome: {}", self.market, ext, exc)
            self.apply(ext, om.Unknown(at=trio.current_time(), detail=str(exc)))
            return False
        except (ValueError, KeyError, ArithmeticError) as exc:
            # Ports raise OrderBuildFailed; any other order that cannot be built is still
            # a rejection of this order (never sent), not a crash of the actor.
            self.refused(state, ext, "BUILD_FAILED", str(exc), exc)
            return False
        finally:
            self.in_flight -= involved
        self.latencies.append(trio.current_time() - started)
        self.sent += 1
        self.apply(ext, om.Acked(at=trio.current_time(), venue_id=placed.id))
        return True

    def refused(self, state: _SideState, ext: str, code: str, detail: str, exc: Exception) -> None:
        """The order was refused (by the venue, or could not be built): counted, final, backed off."""
        self.count_reject(code)
        self.apply(ext, om.SendFailed(at=trio.current_time(), reason=f"{code}: {detail}"))
        self.back_off(state, exc)

    def back_off(self, state: _SideState, reason: object) -> None:
        """A rejected order: wait before this side sends again, longer each time in a row."""
        state.reject_streak += 1
        if any(routine in str(reason) for routine in ROUTINE_REJECTIONS):
            # The book moved under a quote at the touch, or the order being replaced filled
            # first: routine races, retry soon.
            pause = min(0.1 * 2 ** (state.reject_streak - 1), 2.0)
        else:
            pause = min(self.p.reject_pause_s * 2 ** (state.reject_streak - 1), 30.0)
        state.retry_at = trio.current_time() + pause
        logger.warning("{} {}: order refused ({}); pausing {:.1f}s", self.market, state.side.value, reason, pause)

    async def place(self, state: _SideState, target: SideTarget) -> None:
        ext = self.new_record(state.side, target)
        state.live = ext
        await self.send(state, ext, self.request(state.side, target, ext, None))
        self.publish()

    async def replace(self, state: _SideState, old: str, target: SideTarget) -> None:
        ext = self.new_record(state.side, target, replaces=old)
        self.apply(old, om.ReplaceSent(at=trio.current_time(), new_external_id=ext))
        state.live = ext
        self.replaces += 1
        ok = await self.send(state, ext, self.request(state.side, target, ext, old))
        if not ok:
            rec = self.records.get(ext)
            if rec is not None and rec.state is om.OrderState.REJECTED:
                # REST refused the replacement: the old order is untouched unless it is gone.
                reason = rec.status_reason or ""
                if any(str(code) in reason for code in PREV_NOT_FOUND_CODES):
                    self.apply(old, om.NotFound(at=trio.current_time()))
                else:
                    self.apply(old, om.CancelFailed(at=trio.current_time(), reason=reason))
                old_rec = self.records.get(old)
                state.live = old if old_rec is not None and old_rec.may_be_open else None
        self.publish()

    async def cancel(self, state: _SideState, ext: str) -> None:
        self.apply(ext, om.CancelSent(at=trio.current_time()))
        if state.live == ext:
            state.live = None
        self.cancels += 1
        self.in_flight.add(ext)
        try:
            await self.port.cancel_order_by_external_id(ext)
        except VenueError as exc:
            # Not found, or unknown outcome: reconciliation settles it by externalId.
            logger.warning("{}: cancel of {} failed: {}", self.market, ext, exc)
            rec = self.records.get(ext)
            if rec is not None:
                self.store(attrs.evolve(rec, needs_lookup=True))
            if isinstance(exc, RateLimited):
                await trio.sleep(exc.retry_after or 1.0)
        finally:
            self.in_flight.discard(ext)
        self.publish()

    # -- telemetry -------------------------------------------------------------------------
    def publish(self) -> None:
        open_views = tuple(
            LiveOrderView(
                side=rec.side.value,
                price=self.spec.ticks_to_price(rec.price_ticks),
                qty=self.spec.lots_to_qty(rec.remaining_lots),
                external_id=rec.external_id,
            )
            # Everything that may rest at the venue, pending states included: these are
            # the orders the Executor is watching (and will cancel or settle).
            for rec in self.open_records()
        )
        now = trio.current_time()
        if now >= self._latency_stats_at + 0.5:  # sorting 512 samples at every action is waste
            lat = sorted(self.latencies)
            self._latency_stats = ((nearest_rank(lat, 0.5) or 0.0) * 1000, (nearest_rank(lat, 0.99) or 0.0) * 1000)
            self._latency_stats_at = now
        self.telemetry.publish(
            ExecStats(
                market=self.market,
                open_orders=open_views,
                orders_sent=self.sent,
                replaces=self.replaces,
                cancels=self.cancels,
                rejects=self.rejects,
                reject_reasons=tuple(sorted(self.reject_reasons.items())),
                orphans_cancelled=self.orphans,
                latency_p50_ms=self._latency_stats[0],
                latency_p99_ms=self._latency_stats[1],
                at=now,
            )
        )


async def executor(
    *,
    port: ExchangePort,
    spec: MarketSpec,
    params: ExecutorParams,
    ids: ExternalIdFactory,
    inbox: trio.MemoryReceiveChannel[ExecIn],
    epoch_ms: Callable[[], int],
    telemetry: Telemetry,
    journal: Journal | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    ex = _Executor(port=port, spec=spec, params=params, ids=ids, epoch_ms=epoch_ms, telemetry=telemetry,
                   journal=journal)
    # Updates that queued while we were down describe orders we no longer track.
    while True:
        try:
            inbox.receive_nowait()
        except trio.WouldBlock:
            break
    await ex.reconcile_at_start()
    ex.publish()
    try:
        await _run(ex, inbox, task_status)
    except BaseException:
        # Whatever ended us (crash, injected fault, shutdown), our orders must not rest
        # unwatched until the next incarnation reconciles: cancel them, shielded, bounded.
        ours = list(ex.open_ids)
        if ours:
            with trio.CancelScope(shield=True), trio.move_on_after(3.0):
                while True:  # a 5xx burst must not leave them behind: retry while we may
                    try:
                        await ex.port.mass_cancel(external_ids=ours)
                        break
                    except VenueError as exc:
                        logger.warning("{}: cancel on exit failed: {}", ex.market, exc)
                    await trio.sleep(0.25)
        raise


async def _run(
    ex: _Executor,
    inbox: trio.MemoryReceiveChannel[ExecIn],
    task_status: trio.TaskStatus[None],
) -> None:
    async with trio.open_nursery() as nursery:
        for state in ex.slots:
            nursery.start_soon(ex.side_worker, state)
        nursery.start_soon(ex.reconcile_loop)
        task_status.started()
        async for msg in inbox:
            match msg:
                case Approved():
                    ex.on_approved(msg)
                case OrderEvent(order=order):
                    ex.on_venue_order(order)
                case FillEvent():
                    pass  # the order's own update carries the filled quantity
