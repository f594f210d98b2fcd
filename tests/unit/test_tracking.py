"""The Executor's order tracker and slot gating (extmm.domain.tracking, execution.hold),
driven without trio: times are plain numbers passed in."""

from __future__ import annotations

import pytest

from extmm.domain import orders as om
from extmm.domain.execution import Action, ActionKind, SideTarget, hold, idle_wait
from extmm.domain.tracking import OrderTracker
from extmm.domain.units import Side

TARGET = SideTarget(ticks=100_000, lots=10)


def _placed(tracker: OrderTracker, ext: str, side: Side = Side.BUY, level: int = 0, at: float = 0.0) -> None:
    """What the Executor does for a place: record, make it the slot's order, REST ack."""
    tracker.create(external_id=ext, market="BTC-USD", side=side, target=TARGET, at=at)
    slot = next(s for s in tracker.slots if s.side is side and s.level == level)
    slot.live = ext
    tracker.apply(ext, om.Acked(at=at, venue_id=hash(ext) % 10_000))


def test_slots_cover_every_side_and_level():
    tracker = OrderTracker(levels=3)
    assert [(s.side, s.level) for s in tracker.slots] == [
        (Side.BUY, 0), (Side.SELL, 0), (Side.BUY, 1), (Side.SELL, 1), (Side.BUY, 2), (Side.SELL, 2)]
    assert tracker.sides[Side.SELL] is tracker.slots[1]


def test_open_index_and_transitions_follow_the_records():
    seen: list[tuple[str, om.OrderState]] = []
    tracker = OrderTracker(on_transition=lambda rec: seen.append((rec.external_id, rec.state)))
    _placed(tracker, "a")
    assert tracker.may_be_open() == 1 and [r.external_id for r in tracker.open_records()] == ["a"]
    tracker.apply("a", om.Acked(at=0.1, venue_id=hash("a") % 10_000))  # echo: no transition
    tracker.apply("a", om.VenueUpdate(at=1.0, status="CANCELLED", filled_lots=0, venue_id=hash("a") % 10_000))
    assert tracker.may_be_open() == 0 and tracker.records["a"].is_terminal
    assert seen == [("a", om.OrderState.PENDING_NEW), ("a", om.OrderState.NEW), ("a", om.OrderState.CANCELLED)]
    tracker.forget("a")
    assert "a" not in tracker.records and tracker.apply("a", om.NotFound(at=2.0)).record is None


def test_a_fill_makes_every_slot_of_that_side_wait_for_risk():
    tracker = OrderTracker(levels=2)
    _placed(tracker, "b1")
    applied = tracker.venue_update("b1", at=1.0, status="PARTIALLY_FILLED", filled_lots=3,
                                   venue_id=hash("b1") % 10_000, status_reason=None)
    assert applied.record is not None and applied.record.filled_lots == 3 and applied.ended == ()
    assert [s.needs_approval for s in tracker.slots] == [True, False, True, False]
    # The next approval releases them (even with unchanged targets).
    changed = tracker.set_targets(lambda side, level: None)
    assert {(s.side, s.level) for s in changed} == {(Side.BUY, 0), (Side.BUY, 1)}
    assert not any(s.needs_approval for s in tracker.slots)


def test_a_final_status_frees_the_slot_and_a_rejection_pauses_it():
    tracker = OrderTracker(first_reject_pause_s=1.0)
    _placed(tracker, "s1", side=Side.SELL)
    applied = tracker.venue_update("s1", at=5.0, status="REJECTED", filled_lots=0,
                                   venue_id=hash("s1") % 10_000, status_reason="POST_ONLY_FAILED")
    slot = tracker.sides[Side.SELL]
    assert applied.ended == (slot,) and slot.live is None
    (pause,) = applied.pauses
    assert (pause.slot, pause.reason, pause.seconds) == (slot, "POST_ONLY_FAILED", pytest.approx(0.1))
    assert slot.pacing.reject_streak == 1 and slot.pacing.retry_at == pytest.approx(5.1)


def test_the_venue_taking_the_slots_order_ends_the_refusal_streak():
    tracker = OrderTracker()
    slot = tracker.sides[Side.BUY]
    tracker.refuse(slot, "NOT_ENOUGH_FUNDS", now=0.0)
    tracker.refuse(slot, "NOT_ENOUGH_FUNDS", now=1.0)
    assert slot.pacing.reject_streak == 2 and slot.pacing.retry_at == pytest.approx(3.0)
    _placed(tracker, "b2", at=4.0)
    tracker.venue_update("b2", at=4.5, status="NEW", filled_lots=0, venue_id=hash("b2") % 10_000, status_reason=None)
    assert slot.pacing.reject_streak == 0


def test_an_overfill_report_is_clamped_and_a_nonsense_event_flags_a_lookup():
    tracker = OrderTracker()
    _placed(tracker, "c")
    applied = tracker.venue_update("c", at=1.0, status="FILLED", filled_lots=99, venue_id=hash("c") % 10_000,
                                   status_reason=None)
    assert applied.record is not None and applied.record.filled_lots == 10
    bad = tracker.apply("c", om.VenueUpdate(at=2.0, status="NEW", filled_lots=0, venue_id=hash("c") % 10_000))
    assert isinstance(bad.error, om.IllegalTransition)
    assert bad.record is not None and bad.record.needs_lookup and bad.record.state is om.OrderState.FILLED


def test_the_live_order_view_lets_go_of_cancelling_orders():
    tracker = OrderTracker()
    _placed(tracker, "d", at=100.0)
    slot = tracker.sides[Side.BUY]
    live = tracker.live_order(slot, refresh_after_s=30.0)
    assert live is not None and (live.ticks, live.lots, live.placed_at, live.expires_at) == (100_000, 10, 100.0, 130.0)
    tracker.apply("d", om.CancelSent(at=101.0))
    assert tracker.live_order(slot, refresh_after_s=30.0) is None and slot.live is None


PLACE = Action(kind=ActionKind.PLACE, target=TARGET)
REPLACE = Action(kind=ActionKind.REPLACE, target=TARGET)


def _hold(action: Action, **kw: object) -> Action:
    args: dict[str, object] = dict(now=10.0, retry_at=0.0, needs_approval=False, open_orders=0,
                                   max_open_orders=10, live_unacknowledged=False)
    args.update(kw)
    return hold(action, **args)  # type: ignore[arg-type]


def test_hold_gates_new_orders_in_order_of_precedence():
    assert _hold(PLACE) is PLACE
    backing = _hold(PLACE, retry_at=12.0, needs_approval=True)
    assert (backing.kind, backing.wait_s, backing.reason) == (ActionKind.NONE, 2.0, "backing off")
    assert _hold(REPLACE, needs_approval=True).reason == "filled: waiting for Risk"
    capped = _hold(PLACE, open_orders=10)
    assert (capped.kind, capped.wait_s) == (ActionKind.NONE, 0.5)
    # Cancels are never held: taking quotes down must not wait.
    cancel = Action(kind=ActionKind.CANCEL)
    assert _hold(cancel, retry_at=99.0, needs_approval=True, open_orders=99) is cancel


def test_a_replace_of_an_unacknowledged_order_becomes_a_cancel():
    assert _hold(REPLACE, live_unacknowledged=True).kind is ActionKind.CANCEL
    assert _hold(PLACE, live_unacknowledged=True) is PLACE
    # A pause in force still wins: nothing is sent while backing off.
    assert _hold(REPLACE, live_unacknowledged=True, retry_at=11.0).kind is ActionKind.NONE


def test_idle_wait_wakes_for_staleness_and_refresh_and_never_spins():
    nothing = Action(kind=ActionKind.NONE)
    assert idle_wait(nothing, now=0.0, default_s=5.0, stale_at=None, expires_at=None) == 5.0
    assert idle_wait(Action(kind=ActionKind.NONE, wait_s=0.3), now=0.0, default_s=5.0, stale_at=None,
                     expires_at=None) == 0.3
    assert idle_wait(nothing, now=0.0, default_s=5.0, stale_at=2.0, expires_at=None) == pytest.approx(2.001)
    assert idle_wait(nothing, now=0.0, default_s=5.0, stale_at=2.0, expires_at=1.0) == pytest.approx(1.001)
    assert idle_wait(nothing, now=5.0, default_s=5.0, stale_at=4.0, expires_at=None) == 0.001
