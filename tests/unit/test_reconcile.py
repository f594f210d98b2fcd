"""Reconciliation and settlement decisions (extmm.domain.reconcile), without trio."""

from __future__ import annotations

from extmm.domain import orders as om
from extmm.domain import reconcile
from extmm.domain.units import Side


def _sent(ext: str = "extmm-t-1", at: float = 0.0) -> om.OrderRecord:
    rec = om.OrderRecord.new(external_id=ext, market="BTC-USD", side=Side.SELL, price_ticks=100, qty_lots=5, at=at)
    return rec.apply(om.Sent(at=at))


def test_only_orders_tracked_as_possibly_open_are_followed_the_rest_are_orphans():
    acked = _sent().apply(om.Acked(at=0.1, venue_id=1))
    assert reconcile.tracked_open(acked)
    assert reconcile.tracked_open(acked.apply(om.CancelSent(at=0.2)))  # may still be open
    assert not reconcile.tracked_open(None)  # from before a restart, or forgotten
    assert not reconcile.tracked_open(acked.apply(om.VenueUpdate(at=0.3, status="CANCELLED", filled_lots=0,
                                                                 venue_id=1)))


def test_an_open_order_nobody_owns_or_asks_about_is_cancelled_again():
    cancelling = _sent().apply(om.Acked(at=0.1, venue_id=1)).apply(om.CancelSent(at=0.2))
    assert reconcile.still_open_after_cancel(cancelling, in_flight=False, live=False)
    assert not reconcile.still_open_after_cancel(cancelling, in_flight=True, live=False)
    assert not reconcile.still_open_after_cancel(cancelling, in_flight=False, live=True)
    filled = cancelling.apply(om.VenueUpdate(at=0.3, status="FILLED", filled_lots=5, venue_id=1))
    assert not reconcile.still_open_after_cancel(filled, in_flight=False, live=False)
    assert not reconcile.still_open_after_cancel(None, in_flight=False, live=False)


def test_a_missing_order_is_looked_up_only_after_the_grace_unless_flagged():
    pending = _sent(at=10.0)
    # Unacknowledged and young: its answer may still come.
    assert not reconcile.lookup_due(pending, open_at_venue=False, now=12.9, grace_s=3.0)
    assert reconcile.lookup_due(pending, open_at_venue=False, now=13.0, grace_s=3.0)
    # Listed open at the venue: nothing to settle.
    assert not reconcile.lookup_due(pending, open_at_venue=True, now=100.0, grace_s=3.0)
    # An acknowledged order updated recently waits too...
    acked = pending.apply(om.Acked(at=20.0, venue_id=1))
    assert not reconcile.lookup_due(acked, open_at_venue=False, now=21.0, grace_s=3.0)
    assert reconcile.lookup_due(acked, open_at_venue=False, now=23.0, grace_s=3.0)
    # ...unless a request about it ended ambiguously: then at once.
    ambiguous = acked.apply(om.Unknown(at=21.0, detail="cancel timed out"))
    assert ambiguous.needs_lookup
    assert reconcile.lookup_due(ambiguous, open_at_venue=False, now=21.0, grace_s=3.0)


def test_a_lookup_that_finds_nothing_ends_an_unknown_order():
    pending = _sent().apply(om.Unknown(at=1.0, detail="timeout"))
    settled = pending.apply(om.NotFound(at=5.0))
    assert settled.state is om.OrderState.REJECTED and not settled.may_be_open and not settled.needs_lookup


def test_a_failed_place_is_final_only_when_known_not_placed():
    pending = _sent()
    final = reconcile.failed_place(known_not_placed=True, at=1.0, reason="TransientServerError", detail="500")
    assert pending.apply(final).state is om.OrderState.REJECTED
    unknown = reconcile.failed_place(known_not_placed=False, at=1.0, reason="NetworkError", detail="timed out")
    after = pending.apply(unknown)
    # Unknown is a state: still possibly open, flagged for a lookup.
    assert after.state is om.OrderState.PENDING_NEW and after.may_be_open and after.needs_lookup


def test_settled_records_are_forgotten_after_a_minute_open_ones_never():
    done = _sent("a").apply(om.SendFailed(at=0.0, reason="x"))
    open_ = _sent("b").apply(om.Acked(at=0.0, venue_id=2))
    records = {"a": done, "b": open_}
    assert reconcile.forgettable(records, now=60.0) == []
    assert reconcile.forgettable(records, now=60.5) == ["a"]
    assert reconcile.forgettable(records, now=10_000.0) == ["a"]
