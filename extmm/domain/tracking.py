"""The Executor's orders and order slots, without I/O.

`OrderTracker` keeps every order record through its lifecycle (`extmm.domain.orders`),
the index of those that may rest at the venue, and the order slots (one per side and
ladder level), and works out what each event means for them: a fill makes the side wait
for Risk, a final status frees the slot, a rejection pauses it (`extmm.domain.refusals`).
It has one owner (the Executor actor) and is mutable, but pure: times arrive with the
events, and nothing is sent or logged here — `apply` reports what the actor must log and
which slots it must wake.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from extmm.domain import orders as om
from extmm.domain.execution import LiveOrder, SideTarget
from extmm.domain.refusals import Pacing
from extmm.domain.units import Side

ACCEPTED_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED", "FILLED"})  # the venue took the order


@attrs.define(kw_only=True, eq=False)
class OrderSlot:
    """One order slot: a side's ladder level (0 = nearest the touch)."""

    side: Side
    level: int = 0
    target: SideTarget | None = None
    live: str | None = None  # external id of this slot's current order
    pacing: Pacing = Pacing()
    needs_approval: bool = False  # filled since the last approval: Risk must judge again


@attrs.frozen(kw_only=True)
class Pause:
    """A slot paused after its order was refused."""

    slot: OrderSlot
    reason: str
    seconds: float


@attrs.frozen(kw_only=True)
class Applied:
    """What applying one event did."""

    record: om.OrderRecord | None = None  # the record after it; None: not an order we track
    error: om.OrderError | None = None  # it did not fit the history: the record awaits a lookup
    ended: tuple[OrderSlot, ...] = ()  # slots whose order it ended (wake them)
    pauses: tuple[Pause, ...] = ()  # slots paused because it rejected their order


class OrderTracker:
    def __init__(
        self,
        *,
        levels: int = 1,
        first_reject_pause_s: float = 1.0,
        on_transition: Callable[[om.OrderRecord], None] | None = None,
    ) -> None:
        self.first_reject_pause_s = first_reject_pause_s
        self.on_transition = on_transition  # called at every state or fill change (journal)
        self.records: dict[str, om.OrderRecord] = {}
        # Index of `records` that may rest at the venue: the per-order checks (open-order
        # cap, telemetry) must not scan the settled history, thousands long at high rates.
        self.open_ids: dict[str, None] = {}  # insertion-ordered set
        self.sides = {Side.BUY: OrderSlot(side=Side.BUY), Side.SELL: OrderSlot(side=Side.SELL)}
        # Every order slot, the first levels (`sides`) included; a ladder adds levels ≥ 1.
        self.slots: list[OrderSlot] = [*self.sides.values()] + [
            OrderSlot(side=side, level=level) for level in range(1, max(levels, 1)) for side in (Side.BUY, Side.SELL)
        ]
        # The LiveOrder last made for a slot, with the (immutable) record and refresh time it
        # was made from: asked for on every approval, it only changes with the record.
        self._live_made: dict[OrderSlot, tuple[om.OrderRecord, float, LiveOrder]] = {}

    # -- records ---------------------------------------------------------------------------
    def store(self, rec: om.OrderRecord) -> None:
        old = self.records.get(rec.external_id)
        if self.on_transition is not None and (
            old is None or (old.state, old.filled_lots) != (rec.state, rec.filled_lots)
        ):
            self.on_transition(rec)
        self.records[rec.external_id] = rec
        if rec.may_be_open:
            self.open_ids[rec.external_id] = None
        else:
            self.open_ids.pop(rec.external_id, None)

    def create(
        self, *, external_id: str, market: str, side: Side, target: SideTarget, at: float, replaces: str | None = None
    ) -> om.OrderRecord:
        """A new order, recorded as sent."""
        rec = om.OrderRecord.new(external_id=external_id, market=market, side=side, price_ticks=target.ticks,
                                 qty_lots=target.lots, at=at, replaces=replaces)
        rec = rec.apply(om.Sent(at=at))
        self.store(rec)
        return rec

    def mark_for_lookup(self, ext: str) -> None:
        """A request about this order ended ambiguously: reconciliation looks it up."""
        rec = self.records.get(ext)
        if rec is not None:
            self.store(attrs.evolve(rec, needs_lookup=True))

    def forget(self, ext: str) -> None:
        self.records.pop(ext, None)
        self.open_ids.pop(ext, None)

    def open_records(self) -> list[om.OrderRecord]:
        """The records that may rest at the venue (pending states included), oldest first."""
        return [self.records[ext] for ext in self.open_ids]

    def may_be_open(self) -> int:
        return len(self.open_ids)

    def is_live(self, ext: str) -> bool:
        """Some slot's current order."""
        return any(slot.live == ext for slot in self.slots)

    # -- events ----------------------------------------------------------------------------
    def apply(self, ext: str, event: om.OrderEvent) -> Applied:
        rec = self.records.get(ext)
        if rec is None:
            return Applied()
        filled_before = rec.filled_lots
        error: om.OrderError | None = None
        try:
            rec = rec.apply(event)
        except om.OrderError as exc:
            error = exc
            rec = attrs.evolve(rec, needs_lookup=True)
        self.store(rec)
        if rec.filled_lots > filled_before:
            # Risk sized this side for the position before the fill: no new exposure here
            # until it has judged the new one (a silent Quoter would otherwise be refilled).
            for slot in self.slots:
                if slot.side is rec.side:
                    slot.needs_approval = True
        ended: list[OrderSlot] = []
        pauses: list[Pause] = []
        for slot in self.slots:
            if slot.live == ext and rec.is_terminal:
                slot.live = None
                if rec.state is om.OrderState.REJECTED:
                    pauses.append(self.refuse(slot, rec.status_reason or "REJECTED", now=event.at))
                ended.append(slot)
        return Applied(record=rec, error=error, ended=tuple(ended), pauses=tuple(pauses))

    def venue_update(
        self, ext: str, *, at: float, status: str, filled_lots: int, venue_id: int, status_reason: str | None
    ) -> Applied:
        """The venue's view of one of our orders (account stream or a REST answer)."""
        rec = self.records.get(ext)
        if rec is None:
            return Applied()  # not ours, or from before a restart (reconciliation handles it)
        applied = self.apply(ext, om.VenueUpdate(at=at, status=status, filled_lots=min(filled_lots, rec.qty_lots),
                                                 venue_id=venue_id, status_reason=status_reason))
        if status in ACCEPTED_STATUSES:
            for slot in self.slots:
                if slot.live == ext:
                    slot.pacing = slot.pacing.accepted()
        return applied

    def refuse(self, slot: OrderSlot, reason: str, *, now: float) -> Pause:
        """A refused order of this slot: it waits before sending again, longer each time."""
        pause = slot.pacing.pause(reason, first_pause_s=self.first_reject_pause_s)
        slot.pacing = slot.pacing.refused(reason, now=now, first_pause_s=self.first_reject_pause_s)
        return Pause(slot=slot, reason=reason, seconds=pause)

    # -- slots -----------------------------------------------------------------------------
    def set_targets(self, target_of: Callable[[Side, int], SideTarget | None]) -> list[OrderSlot]:
        """Risk's new approval; returns the slots whose target changed (or that waited for it)."""
        changed = []
        for slot in self.slots:
            target = target_of(slot.side, slot.level)
            if slot.target != target or slot.needs_approval:
                slot.target = target
                slot.needs_approval = False
                changed.append(slot)
        return changed

    def live_order(self, slot: OrderSlot, *, refresh_after_s: float) -> LiveOrder | None:
        """The slot's order as `execution.decide` sees it; None when it has none that can
        still be replaced (a final or cancelling one is let go)."""
        if slot.live is None:
            return None
        rec = self.records.get(slot.live)
        made = self._live_made.get(slot)
        if made is not None and made[0] is rec and made[1] == refresh_after_s:
            return made[2]  # the same record passed the checks below when this was made
        if rec is None or rec.is_terminal or rec.state is om.OrderState.PENDING_CANCEL:
            slot.live = None
            return None
        live = LiveOrder(
            external_id=rec.external_id,
            ticks=rec.price_ticks,
            lots=rec.remaining_lots,
            placed_at=rec.created_at,
            expires_at=rec.created_at + refresh_after_s,
        )
        self._live_made[slot] = (rec, refresh_after_s, live)
        return live
