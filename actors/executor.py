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

from collections.abc import Callable
from decimal import Decimal
from typing import assert_never

import attrs
import trio
from loguru import logger

from actors.exec_stats import ExecCounters
from actors.messages import Approved, ExecIn, FillEvent, OrderUpdate
from extmm.domain import orders as om
from extmm.domain import reconcile
from extmm.domain.execution import NOTHING, ActionKind, LiveOrder, SideTarget, decide, hold, idle_wait
from extmm.domain.refusals import RATE_LIMITED_PAUSE_S, replace_refused, slot_keeps_old
from extmm.domain.tracking import Applied, OrderSlot, OrderTracker, Pause
from extmm.domain.units import MarketSpec, Rounding, Side
from extmm.journal.actor import Journal
from extmm.journal.hooks import order_row
from extmm.ops.telemetry import Telemetry
from extmm.venue.errors import OrderRejected, RateLimited, VenueError
from extmm.venue.placement import placement_known
from extmm.venue.port import ExchangePort
from extmm.venue.signing import ExternalIdFactory, is_ours
from extmm.venue.types import OrderInfo, OrderRequest

# Fixed pauses of the start-up and exit loops (polling the venue, not backing off).
START_RETRY_S = 0.5  # listing our open orders failed
START_CONFIRM_S = 0.2  # after a mass cancel, before listing again
EXIT_RETRY_S = 0.25  # the cancel on exit failed


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
        self.params = params
        self.ids = ids
        self.epoch_ms = epoch_ms
        self.telemetry = telemetry
        self.orders = OrderTracker(
            levels=params.levels,
            first_reject_pause_s=params.reject_pause_s,
            on_transition=self._journal_transition if self.journal.enabled else None,
        )
        self.wakes = {slot: trio.Event() for slot in self.orders.slots}  # a slot hashes by identity
        # Slots whose worker sleeps with nothing to do, and the order it judged (see `on_approved`).
        self.settled: dict[OrderSlot, LiveOrder | None] = {}
        self.last_approved_at = trio.current_time()
        self.book_updated_at: float | None = None  # of the book behind the current targets
        self.counts = ExecCounters()
        self.orphan_cancels_in_flight: set[str] = set()
        self.in_flight: set[str] = set()  # externalIds a place, replace or cancel is about

    def _journal_transition(self, rec: om.OrderRecord) -> None:
        self.journal.record(order_row(self.journal, rec, self.spec))  # every state transition

    # -- reconciliation --------------------------------------------------------------------
    async def reconcile_at_start(self, timeout_s: float = 10.0) -> None:
        with trio.move_on_after(timeout_s) as scope:
            while True:
                try:
                    open_orders = await self.port.get_open_orders(self.market)
                except VenueError as exc:
                    logger.warning("{}: start-up reconciliation: {}; retrying", self.market, exc)
                    await trio.sleep(START_RETRY_S)
                    continue
                ours = [o for o in open_orders if is_ours(o.external_id, self.params.prefix)]
                others = len(open_orders) - len(ours)
                if others:
                    logger.warning("{}: {} open orders not made by extmm are left alone", self.market, others)
                if not ours:
                    logger.info("{}: reconciled, no open orders of ours", self.market)
                    return
                logger.info("{}: cancelling {} open orders of ours left from before", self.market, len(ours))
                self.counts.orphans += len(ours)
                try:
                    await self.port.mass_cancel(external_ids=[o.external_id for o in ours])
                except VenueError as exc:
                    logger.warning("{}: start-up mass cancel: {}; retrying", self.market, exc)
                await trio.sleep(START_CONFIRM_S)
        if scope.cancelled_caught:
            raise ReconcileFailed(f"{self.market}: our open orders did not go away within {timeout_s}s")

    async def reconcile_loop(self) -> None:
        while True:
            await trio.sleep(self.params.reconcile_every_s)
            try:
                await self.reconcile_once()
            except VenueError as exc:
                logger.warning("{}: reconciliation failed: {}", self.market, exc)
                self.publish()

    async def reconcile_once(self) -> None:
        now = trio.current_time()
        open_orders = await self.port.get_open_orders(self.market)
        venue_open = {o.external_id: o for o in open_orders if is_ours(o.external_id, self.params.prefix)}
        for ext, info in venue_open.items():
            if reconcile.tracked_open(self.orders.records.get(ext)):
                self.on_venue_order(info)
                if reconcile.still_open_after_cancel(
                    self.orders.records.get(ext), in_flight=ext in self.in_flight, live=self.orders.is_live(ext)
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
            self.counts.orphans += 1
            logger.warning("{}: orphan order {} found open; cancelling", self.market, ext)
            self.orphan_cancels_in_flight.add(ext)
            try:
                await self.port.cancel_order_by_external_id(ext)
            except VenueError as exc:
                logger.warning("{}: orphan cancel of {} failed: {}", self.market, ext, exc)
            finally:
                self.orphan_cancels_in_flight.discard(ext)
        for rec in self.orders.open_records():
            if reconcile.lookup_due(rec, open_at_venue=rec.external_id in venue_open, now=now,
                                    grace_s=self.params.in_flight_grace_s):
                await self.lookup(rec.external_id)
        for ext in reconcile.forgettable(self.orders.records, now=now):
            self.orders.forget(ext)
        self.publish()

    async def lookup(self, ext: str) -> None:
        found = [o for o in await self.port.get_orders_by_external_id(ext) if o.external_id == ext]
        if found:
            for info in found:
                self.on_venue_order(info)
        else:  # it never reached the venue, or closed without being archived: it is over
            self.apply(ext, om.NotFound(at=trio.current_time()))

    # -- events ----------------------------------------------------------------------------
    def apply(self, ext: str, event: om.OrderEvent) -> None:
        self._report(ext, self.orders.apply(ext, event))

    def _report(self, ext: str, applied: Applied) -> None:
        """Log what an event did and wake the slots it freed."""
        if applied.error is not None:
            logger.error("{}: order {}: {}; will look it up", self.market, ext, applied.error)
        for pause in applied.pauses:
            self._log_pause(pause)
        for slot in applied.ended:
            self.wake(slot)

    def _log_pause(self, pause: Pause) -> None:
        logger.warning("{} {}: order refused ({}); pausing {:.1f}s", self.market, pause.slot.side.value,
                       pause.reason, pause.seconds)

    def wake(self, slot: OrderSlot) -> None:
        self.wakes[slot].set()

    def on_venue_order(self, info: OrderInfo) -> None:
        applied = self.orders.venue_update(
            info.external_id,
            at=trio.current_time(),
            status=info.status,
            filled_lots=self.spec.qty_to_lots(info.filled_qty, Rounding.DOWN),
            venue_id=info.id,
            status_reason=info.status_reason,
        )
        if applied.record is None:
            return
        self._report(info.external_id, applied)
        if info.status == "REJECTED":
            self.counts.count_reject(info.status_reason or "REJECTED")

    def on_approved(self, msg: Approved) -> None:
        self.last_approved_at = msg.decided_at or trio.current_time()
        self.book_updated_at = msg.book_updated_at
        for slot in self.orders.set_targets(msg.target):
            if not self.still_settled(slot):
                self.wake(slot)

    def still_settled(self, slot: OrderSlot) -> bool:
        """Whether a slot's sleeping worker would find nothing to do with its new target.

        Most approvals move a target by less than the replace threshold; waking the worker
        for them only has it decide "nothing" again. It sleeps on: its timer (the staleness
        and refresh deadlines of before this approval, which only moved later) still wakes it
        in time, and it is woken as soon as a target does call for an action."""
        if slot not in self.settled:
            return False
        now = trio.current_time()
        target, live, _ = self.side_view(slot, now)
        if live != self.settled[slot]:
            return False
        action = decide(target=target, live=live, now=now,
                        replace_threshold_bps=self.params.replace_threshold_bps, coalesce_s=self.params.coalesce_s)
        return action == NOTHING

    def side_view(self, slot: OrderSlot, now: float) -> tuple[SideTarget | None, LiveOrder | None, float]:
        """What a side's decision reads: its target (None once stale), its live order, and
        when the targets go stale."""
        stale_at = self.stale_at()
        target = None if now > stale_at else slot.target  # Risk/Quoter quiet, or their book stale
        live = self.orders.live_order(slot, refresh_after_s=self.refresh_after_s)
        if live is not None and live.lots <= 0:
            live = None
        return target, live, stale_at

    def stale_at(self) -> float:
        """When the current targets stop counting: no approval for `stale_target_s`, or
        their book older than `stale_book_s` (whether or not Quoter and Risk are alive)."""
        at = self.last_approved_at + self.params.stale_target_s
        if self.params.stale_book_s is not None and self.book_updated_at is not None:
            at = min(at, self.book_updated_at + self.params.stale_book_s)
        return at

    # -- side workers ----------------------------------------------------------------------
    @property
    def refresh_after_s(self) -> float:
        return max(self.params.order_expiry_s - self.params.refresh_margin_s, 1.0)

    async def side_worker(self, slot: OrderSlot) -> None:
        while True:
            now = trio.current_time()
            target, live, stale_at = self.side_view(slot, now)
            action = decide(
                target=target,
                live=live,
                now=now,
                replace_threshold_bps=self.params.replace_threshold_bps,
                coalesce_s=self.params.coalesce_s,
            )
            action = hold(
                action,
                now=now,
                retry_at=slot.pacing.retry_at,
                needs_approval=slot.needs_approval,
                open_orders=self.orders.may_be_open(),
                max_open_orders=self.params.max_open_orders,
                live_unacknowledged=live is not None
                and self.orders.records[live.external_id].state is om.OrderState.PENDING_NEW,
            )
            match action.kind:
                case ActionKind.PLACE:
                    assert action.target is not None
                    await self.place(slot, action.target)
                case ActionKind.REPLACE:
                    assert live is not None and action.target is not None
                    await self.replace(slot, live.external_id, action.target)
                case ActionKind.CANCEL:
                    assert live is not None
                    await self.cancel(slot, live.external_id)
                case ActionKind.NONE:
                    wait = idle_wait(
                        action,
                        now=now,
                        default_s=self.params.stale_target_s,
                        stale_at=stale_at if target is not None else None,
                        expires_at=live.expires_at if live is not None else None,
                    )
                    if action == NOTHING:
                        self.settled[slot] = live
                    try:
                        with trio.move_on_after(wait):
                            await self.wakes[slot].wait()
                    finally:
                        self.settled.pop(slot, None)
                    self.wakes[slot] = trio.Event()

    def request(self, side: Side, target: SideTarget, ext: str, cancel_id: str | None) -> OrderRequest:
        return OrderRequest(
            market=self.market,
            side=side,
            qty=self.spec.lots_to_qty(target.lots),
            price=self.spec.ticks_to_price(target.ticks),
            external_id=ext,
            expiry_ms=self.epoch_ms() + int(self.params.order_expiry_s * 1000),
            max_fee_rate=self.params.maker_fee_rate if self.params.post_only else self.params.taker_fee_rate,
            post_only=self.params.post_only,
            stp=self.params.stp,
            cancel_id=cancel_id,
        )

    def new_record(self, side: Side, target: SideTarget, replaces: str | None = None) -> str:
        ext = self.ids.next(self.market, side)
        self.orders.create(external_id=ext, market=self.market, side=side, target=target,
                           at=trio.current_time(), replaces=replaces)
        return ext

    async def send(self, slot: OrderSlot, ext: str, req: OrderRequest) -> bool:
        """Place (or replace); True when the venue acknowledged it."""
        started = trio.current_time()
        involved = {ext} if req.cancel_id is None else {ext, req.cancel_id}
        self.in_flight |= involved
        try:
            placed = await self.port.place_order(req)
        except OrderRejected as exc:
            self.refused(slot, ext, str(exc.code), exc.venue_message, exc)
            return False
        except RateLimited as exc:
            self.counts.count_reject("429")
            self.apply(ext, om.SendFailed(at=trio.current_time(), reason="rate limited"))
            slot.pacing = slot.pacing.rate_limited(now=trio.current_time(), retry_after=exc.retry_after)
            return False
        except VenueError as exc:
            known_not_placed = placement_known(exc) is False
            if not known_not_placed:
                logger.warning("{}: place of {} has an unknown outcome: {}", self.market, ext, exc)
            self.apply(ext, reconcile.failed_place(known_not_placed=known_not_placed, at=trio.current_time(),
                                                   reason=type(exc).__name__, detail=str(exc)))
            if known_not_placed:
                self._log_pause(self.orders.refuse(slot, str(exc), now=trio.current_time()))
            # Otherwise ambiguous: still tracked; reconciliation settles it by externalId.
            return False
        except (ValueError, KeyError, ArithmeticError) as exc:
            # Ports raise OrderBuildFailed; any other order that cannot be built is still
            # a rejection of this order (never sent), not a crash of the actor.
            self.refused(slot, ext, "BUILD_FAILED", str(exc), exc)
            return False
        finally:
            self.in_flight -= involved
        self.counts.latencies.append(trio.current_time() - started)
        self.counts.sent += 1
        self.apply(ext, om.Acked(at=trio.current_time(), venue_id=placed.id))
        return True

    def refused(self, slot: OrderSlot, ext: str, code: str, detail: str, exc: Exception) -> None:
        """The order was refused (by the venue, or could not be built): counted, final, backed off."""
        self.counts.count_reject(code)
        applied = self.orders.apply(ext, om.SendFailed(at=trio.current_time(), reason=f"{code}: {detail}"))
        self._report(ext, applied)
        if not any(pause.slot is slot for pause in applied.pauses):
            # The rejected order no longer held the slot (it paused nobody): pause it here,
            # once — a refusal counts once in the slot's streak.
            self._log_pause(self.orders.refuse(slot, str(exc), now=trio.current_time()))

    async def place(self, slot: OrderSlot, target: SideTarget) -> None:
        ext = self.new_record(slot.side, target)
        slot.live = ext
        await self.send(slot, ext, self.request(slot.side, target, ext, None))
        self.publish()

    async def replace(self, slot: OrderSlot, old: str, target: SideTarget) -> None:
        ext = self.new_record(slot.side, target, replaces=old)
        self.apply(old, om.ReplaceSent(at=trio.current_time(), new_external_id=ext))
        slot.live = ext
        self.counts.replaces += 1
        if not await self.send(slot, ext, self.request(slot.side, target, ext, old)):
            event = replace_refused(self.orders.records.get(ext), at=trio.current_time())
            if event is not None:
                self.apply(old, event)
                slot.live = old if slot_keeps_old(self.orders.records.get(old)) else None
        self.publish()

    async def cancel(self, slot: OrderSlot, ext: str) -> None:
        self.apply(ext, om.CancelSent(at=trio.current_time()))
        if slot.live == ext:
            slot.live = None
        self.counts.cancels += 1
        self.in_flight.add(ext)
        try:
            await self.port.cancel_order_by_external_id(ext)
        except VenueError as exc:
            # Not found, or unknown outcome: reconciliation settles it by externalId.
            logger.warning("{}: cancel of {} failed: {}", self.market, ext, exc)
            self.orders.mark_for_lookup(ext)
            if isinstance(exc, RateLimited):
                await trio.sleep(exc.retry_after or RATE_LIMITED_PAUSE_S)
        finally:
            self.in_flight.discard(ext)
        self.publish()

    # -- telemetry -------------------------------------------------------------------------
    def publish(self) -> None:
        self.telemetry.publish(self.counts.stats(self.spec, self.orders.open_records(), now=trio.current_time()))


async def executor_actor(
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
    executor = _Executor(port=port, spec=spec, params=params, ids=ids, epoch_ms=epoch_ms,
                         telemetry=telemetry, journal=journal)
    # Updates that queued while we were down describe orders we no longer track.
    while True:
        try:
            inbox.receive_nowait()
        except trio.WouldBlock:
            break
    await executor.reconcile_at_start()
    executor.publish()
    try:
        await _run(executor, inbox, task_status)
    except BaseException:
        # Whatever ended us (crash, injected fault, shutdown), our orders must not rest
        # unwatched until the next incarnation reconciles: cancel them, shielded, bounded.
        ours = list(executor.orders.open_ids)
        if ours:
            with trio.CancelScope(shield=True), trio.move_on_after(3.0):
                while True:  # a 5xx burst must not leave them behind: retry while we may
                    try:
                        await executor.port.mass_cancel(external_ids=ours)
                        break
                    except VenueError as exc:
                        logger.warning("{}: cancel on exit failed: {}", executor.market, exc)
                    await trio.sleep(EXIT_RETRY_S)
        raise


async def _run(
    executor: _Executor,
    inbox: trio.MemoryReceiveChannel[ExecIn],
    task_status: trio.TaskStatus[None],
) -> None:
    async with trio.open_nursery() as nursery:
        for slot in executor.orders.slots:
            nursery.start_soon(executor.side_worker, slot)
        nursery.start_soon(executor.reconcile_loop)
        task_status.started()
        async for msg in inbox:
            match msg:
                case Approved():
                    executor.on_approved(msg)
                case OrderUpdate(order=order):
                    executor.on_venue_order(order)
                case FillEvent():
                    pass  # the order's own update carries the filled quantity
                case _:
                    assert_never(msg)
