"""Refusal pacing and refused-replace rules (extmm.domain.refusals), without trio."""

from __future__ import annotations

import pytest

from extmm.domain import orders as om
from extmm.domain.backoff import Backoff
from extmm.domain.refusals import (
    ROUTINE_BACKOFF,
    Pacing,
    is_routine,
    reject_backoff,
    replace_refused,
    slot_keeps_old,
)
from extmm.domain.units import Side


@pytest.mark.parametrize(
    ("reason", "first_pause_s", "expected"),
    [
        # Routine races (the book moved under a post-only quote): 0.1 s, doubling up to 2 s.
        ("1140: POST_ONLY_FAILED", 1.0, [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]),
        # Anything else: the configured first pause, doubling up to 30 s.
        ("1140: OrderCostExceedsBalance", 1.5, [1.5, 3.0, 6.0, 12.0, 24.0, 30.0, 30.0]),
    ],
)
def test_refusals_in_a_row_pause_longer_each_time_up_to_a_cap(reason, first_pause_s, expected):
    pacing, pauses = Pacing(), []
    for _ in expected:
        pauses.append(pacing.pause(reason, first_pause_s=first_pause_s))
        pacing = pacing.refused(reason, now=10.0, first_pause_s=first_pause_s)
    assert pauses == pytest.approx(expected)
    assert pacing.reject_streak == len(expected) and pacing.retry_at == pytest.approx(10.0 + expected[-1])
    assert pacing.holds(pacing.retry_at - 0.01) and not pacing.holds(pacing.retry_at)


def test_the_pause_is_the_one_backoff_formula():
    # Same numbers as Backoff.delay: no separate exponential lives here.
    assert ROUTINE_BACKOFF == Backoff(initial=0.1, factor=2.0, cap=2.0, jitter=0.0)
    streaked = Pacing(reject_streak=4)
    assert streaked.pause("x", first_pause_s=0.7) == reject_backoff(0.7).delay(4)


def test_acceptance_ends_the_streak_but_not_a_pause_in_force():
    pacing = Pacing().refused("PREV_ORDER_NOT_FOUND", now=5.0, first_pause_s=1.0)
    accepted = pacing.accepted()
    assert accepted.reject_streak == 0 and accepted.retry_at == pacing.retry_at
    # The next refusal starts from the first pause again.
    assert accepted.pause("PREV_ORDER_NOT_FOUND", first_pause_s=1.0) == pytest.approx(0.1)


def test_rate_limited_waits_what_the_venue_asked_and_keeps_the_streak():
    pacing = Pacing(reject_streak=3, retry_at=1.0)
    assert pacing.rate_limited(now=10.0, retry_after=2.5) == Pacing(reject_streak=3, retry_at=12.5)
    assert pacing.rate_limited(now=10.0, retry_after=None).retry_at == 11.0
    assert pacing.rate_limited(now=10.0, retry_after=0.0).retry_at == 11.0


def test_routine_reasons():
    assert is_routine("POST_ONLY_FAILED") and is_routine("1142: PREV_ORDER_NOT_FOUND")
    assert not is_routine("NOT_ENOUGH_FUNDS") and not is_routine("")


def _record(ext: str = "extmm-t-1") -> om.OrderRecord:
    rec = om.OrderRecord.new(external_id=ext, market="BTC-USD", side=Side.BUY, price_ticks=100, qty_lots=5, at=0.0)
    return rec.apply(om.Sent(at=0.0))


def test_a_refused_replace_whose_old_order_is_gone_ends_the_old_order():
    new = _record("new").apply(om.SendFailed(at=1.0, reason="1142: EditOrderNotFound"))
    assert replace_refused(new, at=1.0) == om.NotFound(at=1.0)
    old = _record("old").apply(om.Acked(at=0.5, venue_id=7)).apply(om.ReplaceSent(at=0.9, new_external_id="new"))
    old = old.apply(replace_refused(new, at=1.0))
    assert old.state is om.OrderState.CANCELLED and not slot_keeps_old(old)


def test_any_other_refused_replace_leaves_the_old_order_open_for_the_slot():
    new = _record("new").apply(om.SendFailed(at=1.0, reason="1140: OrderCostExceedsBalance"))
    event = replace_refused(new, at=1.0)
    assert event == om.CancelFailed(at=1.0, reason="1140: OrderCostExceedsBalance")
    old = _record("old").apply(om.Acked(at=0.5, venue_id=7)).apply(om.ReplaceSent(at=0.9, new_external_id="new"))
    old = old.apply(event)
    assert old.state is om.OrderState.NEW and old.replaced_by is None and slot_keeps_old(old)


def test_a_replace_with_an_unknown_outcome_concludes_nothing_about_the_old_order():
    unknown = _record("new").apply(om.Unknown(at=1.0, detail="timed out"))
    assert unknown.state is om.OrderState.PENDING_NEW
    assert replace_refused(unknown, at=1.0) is None
    assert replace_refused(None, at=1.0) is None
    assert not slot_keeps_old(None)
