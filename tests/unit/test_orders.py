"""Order state machine: the transition table edge by edge, races, and random histories."""

from __future__ import annotations

import itertools

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from extmm.domain.orders import (
    TERMINAL_STATES,
    TRANSITIONS,
    Acked,
    CancelFailed,
    CancelSent,
    FillOutOfRange,
    IllegalTransition,
    NotFound,
    OrderError,
    OrderRecord,
    OrderState,
    ReplaceSent,
    SendFailed,
    Sent,
    Trigger,
    Unknown,
    VenueUpdate,
    transition,
    trigger_of,
)
from extmm.domain.units import Side

S, T = OrderState, Trigger

SAMPLE_EVENTS = {
    T.SENT: Sent(at=1.0),
    T.ACKED: Acked(at=1.0, venue_id=7),
    T.SEND_FAILED: SendFailed(at=1.0, reason="1121 invalid price"),
    T.UNKNOWN: Unknown(at=1.0, detail="read timeout"),
    T.CANCEL_SENT: CancelSent(at=1.0),
    T.REPLACE_SENT: ReplaceSent(at=1.0, new_external_id="mm-2"),
    T.CANCEL_FAILED: CancelFailed(at=1.0, reason="order not found"),
    T.NOT_FOUND: NotFound(at=1.0),
    T.VENUE_NEW: VenueUpdate(at=1.0, status="NEW", filled_lots=0, venue_id=7),
    T.VENUE_PARTIALLY_FILLED: VenueUpdate(at=1.0, status="PARTIALLY_FILLED", filled_lots=3, venue_id=7),
    T.VENUE_FILLED: VenueUpdate(at=1.0, status="FILLED", filled_lots=10, venue_id=7),
    T.VENUE_CANCELLED: VenueUpdate(at=1.0, status="CANCELLED", filled_lots=3, venue_id=7),
    T.VENUE_REJECTED: VenueUpdate(at=1.0, status="REJECTED", filled_lots=0, venue_id=7),
    T.VENUE_EXPIRED: VenueUpdate(at=1.0, status="EXPIRED", filled_lots=3, venue_id=7),
    T.VENUE_UNRECOGNISED: VenueUpdate(at=1.0, status="UNTRIGGERED", filled_lots=0, venue_id=7),
}

_VENUE_FINAL = {
    T.VENUE_FILLED: S.FILLED,
    T.VENUE_CANCELLED: S.CANCELLED,
    T.VENUE_REJECTED: S.REJECTED,
    T.VENUE_EXPIRED: S.EXPIRED,
}
_LATE_ECHOES = (T.ACKED, T.UNKNOWN, T.CANCEL_FAILED, T.NOT_FOUND)

# The specification, written out independently of the module's table construction.
EXPECTED: dict[tuple[OrderState, Trigger], OrderState] = {
    (S.CREATED, T.SENT): S.PENDING_NEW,
    (S.CREATED, T.SEND_FAILED): S.REJECTED,
    (S.PENDING_NEW, T.ACKED): S.NEW,
    (S.PENDING_NEW, T.SEND_FAILED): S.REJECTED,
    (S.PENDING_NEW, T.UNKNOWN): S.PENDING_NEW,
    (S.PENDING_NEW, T.NOT_FOUND): S.REJECTED,
    (S.PENDING_NEW, T.CANCEL_SENT): S.PENDING_CANCEL,
    (S.PENDING_NEW, T.VENUE_NEW): S.NEW,
    (S.PENDING_NEW, T.VENUE_PARTIALLY_FILLED): S.PARTIALLY_FILLED,
    (S.NEW, T.ACKED): S.NEW,
    (S.NEW, T.UNKNOWN): S.NEW,
    (S.NEW, T.CANCEL_SENT): S.PENDING_CANCEL,
    (S.NEW, T.REPLACE_SENT): S.PENDING_CANCEL,
    (S.NEW, T.NOT_FOUND): S.CANCELLED,
    (S.NEW, T.VENUE_NEW): S.NEW,
    (S.NEW, T.VENUE_PARTIALLY_FILLED): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, T.ACKED): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, T.UNKNOWN): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, T.CANCEL_SENT): S.PENDING_CANCEL,
    (S.PARTIALLY_FILLED, T.REPLACE_SENT): S.PENDING_CANCEL,
    (S.PARTIALLY_FILLED, T.NOT_FOUND): S.CANCELLED,
    (S.PARTIALLY_FILLED, T.VENUE_PARTIALLY_FILLED): S.PARTIALLY_FILLED,
    (S.PENDING_CANCEL, T.ACKED): S.PENDING_CANCEL,
    (S.PENDING_CANCEL, T.UNKNOWN): S.PENDING_CANCEL,
    (S.PENDING_CANCEL, T.CANCEL_SENT): S.PENDING_CANCEL,
    (S.PENDING_CANCEL, T.SEND_FAILED): S.REJECTED,
    (S.PENDING_CANCEL, T.NOT_FOUND): S.CANCELLED,
    (S.PENDING_CANCEL, T.CANCEL_FAILED): S.NEW,
    (S.PENDING_CANCEL, T.VENUE_NEW): S.PENDING_CANCEL,
    (S.PENDING_CANCEL, T.VENUE_PARTIALLY_FILLED): S.PENDING_CANCEL,
    (S.REJECTED, T.SEND_FAILED): S.REJECTED,
    **{(src, trig): dst for src in (S.PENDING_NEW, S.NEW, S.PARTIALLY_FILLED, S.PENDING_CANCEL)
       for trig, dst in _VENUE_FINAL.items()},
    **{(final, trig): final for trig, final in _VENUE_FINAL.items()},
    **{(final, late): final for final in TERMINAL_STATES for late in _LATE_ECHOES},
}


def record_in(state: OrderState, *, venue_id: int | None = 7, filled: int = 0) -> OrderRecord:
    base = OrderRecord.new(
        external_id="mm-1", market="BTC-USD", side=Side.BUY, price_ticks=840_000, qty_lots=10, at=0.0
    )
    if state is S.CREATED:
        return base
    return attrs.evolve(base, state=state, venue_id=venue_id, filled_lots=filled)


def test_every_trigger_has_a_sample_event():
    assert set(SAMPLE_EVENTS) == set(Trigger)
    for trigger, event in SAMPLE_EVENTS.items():
        assert trigger_of(event) is trigger


def test_the_table_is_exactly_the_specification():
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize("edge", sorted(EXPECTED, key=lambda e: (e[0].value, e[1].value)), ids=lambda e: f"{e[0].value}-{e[1].value}")
def test_every_legal_edge(edge):
    state, trigger = edge
    event = SAMPLE_EVENTS[trigger]
    assert transition(state, event) is EXPECTED[edge]
    record = record_in(state, venue_id=7, filled=3 if state is S.PARTIALLY_FILLED else 0)
    after = record.apply(event)
    assert after.updated_at == event.at
    if trigger is not T.CANCEL_FAILED or state is not S.PENDING_CANCEL:
        assert after.state is EXPECTED[edge]


ILLEGAL = [(s, t) for s, t in itertools.product(OrderState, Trigger) if (s, t) not in EXPECTED]


@pytest.mark.parametrize("edge", ILLEGAL, ids=lambda e: f"{e[0].value}-{e[1].value}")
def test_every_other_pair_raises(edge):
    state, trigger = edge
    with pytest.raises(IllegalTransition) as info:
        transition(state, SAMPLE_EVENTS[trigger])
    assert info.value.state is state and info.value.trigger is trigger
    assert state.value in str(info.value)


def test_terminal_states_never_lead_elsewhere():
    for (source, _), target in EXPECTED.items():
        if source.is_terminal:
            assert target is source


def test_unrecognised_venue_status_names_the_status():
    with pytest.raises(IllegalTransition, match="'TRIGGERED'"):
        record_in(S.NEW).apply(VenueUpdate(at=1.0, status="TRIGGERED", filled_lots=0, venue_id=7))


def test_stream_overtakes_the_rest_ack():
    order = OrderRecord.new(external_id="mm-1", market="BTC-USD", side=Side.SELL, price_ticks=5, qty_lots=4, at=0.0)
    order = order.apply(Sent(at=0.1))
    assert order.state is S.PENDING_NEW and order.may_be_open
    order = order.apply(VenueUpdate(at=0.2, status="PARTIALLY_FILLED", filled_lots=1, venue_id=42))
    assert (order.state, order.venue_id, order.filled_lots) == (S.PARTIALLY_FILLED, 42, 1)
    order = order.apply(Acked(at=0.3, venue_id=42))
    assert order.state is S.PARTIALLY_FILLED and order.updated_at == 0.3
    with pytest.raises(OrderError, match="does not match"):
        order.apply(Acked(at=0.4, venue_id=43))


def test_filled_quantity_is_monotonic_and_bounded():
    order = record_in(S.NEW)
    order = order.apply(VenueUpdate(at=1, status="PARTIALLY_FILLED", filled_lots=6, venue_id=7))
    stale = order.apply(VenueUpdate(at=2, status="PARTIALLY_FILLED", filled_lots=2, venue_id=7))
    assert stale.filled_lots == 6 and stale.remaining_lots == 4
    with pytest.raises(FillOutOfRange, match="11 lots filled of 10"):
        order.apply(VenueUpdate(at=3, status="PARTIALLY_FILLED", filled_lots=11, venue_id=7))
    done = order.apply(VenueUpdate(at=4, status="FILLED", filled_lots=9, venue_id=7))
    assert done.state is S.FILLED and done.filled_lots == 10 and done.remaining_lots == 0


def test_replace_that_fails_at_rest_reopens_the_old_order():
    live = record_in(S.PARTIALLY_FILLED, filled=3)
    pending = live.apply(ReplaceSent(at=1.0, new_external_id="mm-2"))
    assert pending.state is S.PENDING_CANCEL and pending.replaced_by == "mm-2"
    reopened = pending.apply(CancelFailed(at=2.0, reason="1121 invalid price"))
    assert reopened.state is S.PARTIALLY_FILLED and reopened.replaced_by is None
    assert record_in(S.PENDING_CANCEL, filled=0).apply(CancelFailed(at=2, reason="x")).state is S.NEW
    never_acked = record_in(S.PENDING_CANCEL, venue_id=None)
    assert never_acked.apply(CancelFailed(at=2, reason="x")).state is S.PENDING_NEW


def test_replaced_order_ends_cancelled_and_the_new_one_tracks_its_predecessor():
    old = record_in(S.NEW).apply(ReplaceSent(at=1.0, new_external_id="mm-2"))
    old = old.apply(VenueUpdate(at=1.1, status="CANCELLED", filled_lots=0, venue_id=7, status_reason="ORDER_REPLACED"))
    assert old.state is S.CANCELLED and old.status_reason == "ORDER_REPLACED" and not old.may_be_open
    new = OrderRecord.new(
        external_id="mm-2", market="BTC-USD", side=Side.BUY, price_ticks=5, qty_lots=1, at=1.0, replaces="mm-1"
    )
    assert new.replaces == "mm-1" and new.state is S.CREATED


def test_ambiguous_send_waits_for_a_lookup():
    order = record_in(S.CREATED).apply(Sent(at=1)).apply(Unknown(at=2, detail="timeout"))
    assert order.state is S.PENDING_NEW and order.needs_lookup
    gone = order.apply(NotFound(at=3))
    assert gone.state is S.REJECTED and gone.status_reason == "NOT_FOUND" and not gone.needs_lookup
    found = order.apply(VenueUpdate(at=3, status="NEW", filled_lots=0, venue_id=9))
    assert found.state is S.NEW and not found.needs_lookup and found.venue_id == 9


def test_definite_rejection_records_the_reason():
    order = record_in(S.CREATED).apply(Sent(at=1)).apply(SendFailed(at=2, reason="1140 post-only"))
    assert order.state is S.REJECTED and order.status_reason == "1140 post-only" and order.remaining_lots == 0


@pytest.mark.parametrize("field, value", [("qty_lots", 0), ("price_ticks", -1)])
def test_new_record_validates_its_size_and_price(field, value):
    kwargs = dict(external_id="mm-1", market="BTC-USD", side=Side.BUY, price_ticks=5, qty_lots=1, at=0.0)
    kwargs[field] = value
    with pytest.raises(ValueError, match="mm-1"):
        OrderRecord.new(**kwargs)


# -- random histories ---------------------------------------------------------------------

STATUSES = ["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELLED", "REJECTED", "EXPIRED", "UNTRIGGERED", "weird"]
QTY = 10
VENUE_IDS = st.sampled_from([7, 7, 7, 8])  # mostly the right id, sometimes a conflicting one
venue_updates = st.builds(
    VenueUpdate,
    at=st.just(0.0),
    status=st.sampled_from(STATUSES),
    filled_lots=st.integers(min_value=-1, max_value=QTY + 1),
    venue_id=VENUE_IDS,
)
# Venue updates come three times as often as each of our own events, as in real life.
EVENTS = st.one_of(
    st.builds(Sent, at=st.just(0.0)),
    st.builds(Acked, at=st.just(0.0), venue_id=VENUE_IDS),
    st.builds(SendFailed, at=st.just(0.0), reason=st.just("refused")),
    st.builds(Unknown, at=st.just(0.0)),
    st.builds(CancelSent, at=st.just(0.0)),
    st.builds(ReplaceSent, at=st.just(0.0), new_external_id=st.just("mm-2")),
    st.builds(CancelFailed, at=st.just(0.0), reason=st.just("refused")),
    st.builds(NotFound, at=st.just(0.0)),
    venue_updates,
    venue_updates,
    venue_updates,
)


class OrderHistory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.record = OrderRecord.new(
            external_id="mm-1", market="BTC-USD", side=Side.BUY, price_ticks=100, qty_lots=QTY, at=0.0
        )
        self.clock = 0.0
        self.previous = self.record

    def _apply(self, event) -> None:
        self.previous = self.record
        try:
            self.record = self.record.apply(event)
        except OrderError:
            pass  # refused: the record is unchanged
        else:
            expected = transition(self.previous.state, event)
            if not isinstance(event, CancelFailed) or self.previous.state is not S.PENDING_CANCEL:
                assert self.record.state is expected

    def _now(self) -> float:
        self.clock += 1.0
        return self.clock

    @initialize(already_sent=st.booleans())
    def start(self, already_sent):
        if already_sent:
            self._apply(Sent(at=self._now()))

    @rule(event=EVENTS)
    def happen(self, event):
        self._apply(attrs.evolve(event, at=self._now()))

    @invariant()
    def terminal_is_forever(self):
        if self.previous.state.is_terminal:
            assert self.record.state is self.previous.state

    @invariant()
    def filled_never_decreases_nor_exceeds_qty(self):
        assert self.previous.filled_lots <= self.record.filled_lots <= self.record.qty_lots
        assert self.record.filled_lots >= 0

    @invariant()
    def states_agree_with_fills(self):
        if self.record.state is S.FILLED:
            assert self.record.filled_lots == QTY
        if self.record.is_terminal:
            assert self.record.remaining_lots == 0
        if self.record.state is S.NEW:
            assert self.record.venue_id is not None

    @invariant()
    def venue_id_once_known_never_changes(self):
        if self.previous.venue_id is not None:
            assert self.record.venue_id == self.previous.venue_id


OrderHistory.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestOrderHistory = OrderHistory.TestCase
