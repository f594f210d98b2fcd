"""Order lifecycle: one transition table, one `transition` function, immutable records.

The venue's statuses plus our own pending ones (sent but not acknowledged, cancel sent).
Account-stream updates may overtake the REST acknowledgement, and a REST answer may come
after the venue's final word, so those races are legal edges; anything else raises.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from extmm.domain.units import Side


class OrderState(enum.Enum):
    CREATED = "CREATED"  # built (and signed), not sent yet
    PENDING_NEW = "PENDING_NEW"  # sent, neither acknowledged by REST nor seen on the stream
    NEW = "NEW"  # open at the venue, nothing filled
    PARTIALLY_FILLED = "PARTIALLY_FILLED"  # open at the venue, partly filled
    PENDING_CANCEL = "PENDING_CANCEL"  # cancel (or replace) sent, outcome not seen yet
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def may_be_open(self) -> bool:
        """The venue may hold this order now (it could still fill)."""
        return self in _MAYBE_OPEN


TERMINAL_STATES = frozenset({OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED, OrderState.EXPIRED})
_MAYBE_OPEN = frozenset(
    {OrderState.PENDING_NEW, OrderState.NEW, OrderState.PARTIALLY_FILLED, OrderState.PENDING_CANCEL}
)


class Trigger(enum.Enum):
    """What happened, as far as the transition table cares (derived from an event)."""

    SENT = "SENT"
    ACKED = "ACKED"
    SEND_FAILED = "SEND_FAILED"
    UNKNOWN = "UNKNOWN"
    CANCEL_SENT = "CANCEL_SENT"
    REPLACE_SENT = "REPLACE_SENT"
    CANCEL_FAILED = "CANCEL_FAILED"
    NOT_FOUND = "NOT_FOUND"
    VENUE_NEW = "VENUE_NEW"
    VENUE_PARTIALLY_FILLED = "VENUE_PARTIALLY_FILLED"
    VENUE_FILLED = "VENUE_FILLED"
    VENUE_CANCELLED = "VENUE_CANCELLED"
    VENUE_REJECTED = "VENUE_REJECTED"
    VENUE_EXPIRED = "VENUE_EXPIRED"
    VENUE_UNRECOGNISED = "VENUE_UNRECOGNISED"  # a status we do not trade with (UNTRIGGERED, …)


_VENUE_TRIGGERS = {
    "NEW": Trigger.VENUE_NEW,
    "PARTIALLY_FILLED": Trigger.VENUE_PARTIALLY_FILLED,
    "FILLED": Trigger.VENUE_FILLED,
    "CANCELLED": Trigger.VENUE_CANCELLED,
    "REJECTED": Trigger.VENUE_REJECTED,
    "EXPIRED": Trigger.VENUE_EXPIRED,
}


# -- events ------------------------------------------------------------------------------
# `at` is trio time (seconds), passed in by the caller.


@attrs.frozen(kw_only=True)
class Sent:
    """The place request left (REST POST written)."""

    at: float


@attrs.frozen(kw_only=True)
class Acked:
    """REST 200 with the venue's order id. Acceptance by REST only: the matching engine
    may still reject it (post-only) and says so on the account stream."""

    at: float
    venue_id: int


@attrs.frozen(kw_only=True)
class SendFailed:
    """The venue definitely refused the place request (or we never sent it)."""

    at: float
    reason: str


@attrs.frozen(kw_only=True)
class Unknown:
    """Our last request for this order has an ambiguous outcome (timeout, 5xx): the order
    stays pending until the stream or an externalId lookup settles it."""

    at: float
    detail: str = ""


@attrs.frozen(kw_only=True)
class CancelSent:
    at: float


@attrs.frozen(kw_only=True)
class ReplaceSent:
    """A new order with `cancelId` = this order's external id was sent: for this order
    it is a cancel; the new one is a separate record with `replaces` set."""

    at: float
    new_external_id: str


@attrs.frozen(kw_only=True)
class CancelFailed:
    """The cancel (or the replacing order) was refused: the order is still open, unless
    the venue reports otherwise. After the venue's final word this is a late echo."""

    at: float
    reason: str


@attrs.frozen(kw_only=True)
class NotFound:
    """An externalId lookup found no such order: it never reached the venue, or it was
    closed without being archived (zero-fill closed orders may not be)."""

    at: float


@attrs.frozen(kw_only=True)
class VenueUpdate:
    """The venue's view of the order (account stream or REST); `status` is its raw string."""

    at: float
    status: str
    filled_lots: int
    venue_id: int
    status_reason: str | None = None


OrderEvent = Sent | Acked | SendFailed | Unknown | CancelSent | ReplaceSent | CancelFailed | NotFound | VenueUpdate


def trigger_of(event: OrderEvent) -> Trigger:
    match event:
        case Sent():
            return Trigger.SENT
        case Acked():
            return Trigger.ACKED
        case SendFailed():
            return Trigger.SEND_FAILED
        case Unknown():
            return Trigger.UNKNOWN
        case CancelSent():
            return Trigger.CANCEL_SENT
        case ReplaceSent():
            return Trigger.REPLACE_SENT
        case CancelFailed():
            return Trigger.CANCEL_FAILED
        case NotFound():
            return Trigger.NOT_FOUND
        case VenueUpdate():
            return _VENUE_TRIGGERS.get(event.status.upper(), Trigger.VENUE_UNRECOGNISED)
    raise TypeError(f"not an order event: {event!r}")


# -- the table ---------------------------------------------------------------------------


def _build_table() -> dict[tuple[OrderState, Trigger], OrderState]:
    S, T = OrderState, Trigger  # noqa: N806 - short aliases keep the table readable
    table: dict[tuple[OrderState, Trigger], OrderState] = {
        (S.CREATED, T.SENT): S.PENDING_NEW,
        (S.CREATED, T.SEND_FAILED): S.REJECTED,
        # Waiting for the REST answer; the stream may be faster than HTTP.
        (S.PENDING_NEW, T.ACKED): S.NEW,
        (S.PENDING_NEW, T.SEND_FAILED): S.REJECTED,
        (S.PENDING_NEW, T.UNKNOWN): S.PENDING_NEW,
        (S.PENDING_NEW, T.NOT_FOUND): S.REJECTED,
        (S.PENDING_NEW, T.CANCEL_SENT): S.PENDING_CANCEL,  # cancel by externalId before the ack
        # Open at the venue.
        (S.NEW, T.ACKED): S.NEW,  # the stream said NEW before REST answered
        (S.NEW, T.UNKNOWN): S.NEW,
        (S.NEW, T.CANCEL_SENT): S.PENDING_CANCEL,
        (S.NEW, T.REPLACE_SENT): S.PENDING_CANCEL,
        (S.NEW, T.NOT_FOUND): S.CANCELLED,
        (S.PARTIALLY_FILLED, T.ACKED): S.PARTIALLY_FILLED,
        (S.PARTIALLY_FILLED, T.UNKNOWN): S.PARTIALLY_FILLED,
        (S.PARTIALLY_FILLED, T.CANCEL_SENT): S.PENDING_CANCEL,
        (S.PARTIALLY_FILLED, T.REPLACE_SENT): S.PENDING_CANCEL,
        (S.PARTIALLY_FILLED, T.NOT_FOUND): S.CANCELLED,
        # Cancel in flight: the order may still fill, or turn out never to have existed.
        (S.PENDING_CANCEL, T.ACKED): S.PENDING_CANCEL,
        (S.PENDING_CANCEL, T.UNKNOWN): S.PENDING_CANCEL,
        (S.PENDING_CANCEL, T.CANCEL_SENT): S.PENDING_CANCEL,  # retry
        (S.PENDING_CANCEL, T.SEND_FAILED): S.REJECTED,  # the original place was refused
        (S.PENDING_CANCEL, T.NOT_FOUND): S.CANCELLED,
        # Back to open; `OrderRecord.apply` refines NEW to PENDING_NEW (never acknowledged)
        # or PARTIALLY_FILLED (something filled) from the record's facts.
        (S.PENDING_CANCEL, T.CANCEL_FAILED): S.NEW,
        # Terminal states absorb late echoes of what already happened; nothing leaves them.
        (S.REJECTED, T.SEND_FAILED): S.REJECTED,
    }
    venue_targets = {
        T.VENUE_NEW: S.NEW,
        T.VENUE_PARTIALLY_FILLED: S.PARTIALLY_FILLED,
        T.VENUE_FILLED: S.FILLED,
        T.VENUE_CANCELLED: S.CANCELLED,
        T.VENUE_REJECTED: S.REJECTED,
        T.VENUE_EXPIRED: S.EXPIRED,
    }
    for source in (S.PENDING_NEW, S.NEW):
        table.update({(source, trigger): target for trigger, target in venue_targets.items()})
    table.update({(S.PARTIALLY_FILLED, trigger): target for trigger, target in venue_targets.items()})
    del table[(S.PARTIALLY_FILLED, T.VENUE_NEW)]  # fills do not un-happen
    for trigger, target in venue_targets.items():
        # While cancelling, an open status changes nothing; a final one ends the order.
        table[(S.PENDING_CANCEL, trigger)] = target if target.is_terminal else S.PENDING_CANCEL
    for terminal in TERMINAL_STATES:
        for late in (T.ACKED, T.UNKNOWN, T.CANCEL_FAILED, T.NOT_FOUND):
            table[(terminal, late)] = terminal
    for trigger, target in venue_targets.items():
        if target.is_terminal:
            table[(target, trigger)] = target  # the same final status reported again
    return table


TRANSITIONS: dict[tuple[OrderState, Trigger], OrderState] = _build_table()


class OrderError(ValueError):
    """An event that does not fit the order's history."""


class IllegalTransition(OrderError):
    def __init__(self, state: OrderState, trigger: Trigger, detail: str = "") -> None:
        message = f"illegal order transition: {state.value} on {trigger.value}"
        super().__init__(f"{message} ({detail})" if detail else message)
        self.state = state
        self.trigger = trigger


class FillOutOfRange(OrderError):
    pass


def transition(state: OrderState, event: OrderEvent) -> OrderState:
    """The next state, by table lookup only; raises IllegalTransition for anything else."""
    trigger = trigger_of(event)
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        detail = f"venue status {event.status!r}" if isinstance(event, VenueUpdate) else ""
        raise IllegalTransition(state, trigger, detail) from None


# -- the record --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class OrderRecord:
    """One order as we know it; `apply` returns the next record (or raises OrderError)."""

    external_id: str
    venue_id: int | None = None
    market: str
    side: Side
    price_ticks: int
    qty_lots: int
    filled_lots: int = 0
    state: OrderState = OrderState.CREATED
    status_reason: str | None = None
    created_at: float
    updated_at: float
    replaces: str | None = None  # external id of the order this one replaces (cancelId)
    replaced_by: str | None = None  # external id of the order sent to replace this one
    needs_lookup: bool = False  # an ambiguous request outcome is unresolved

    @classmethod
    def new(
        cls,
        *,
        external_id: str,
        market: str,
        side: Side,
        price_ticks: int,
        qty_lots: int,
        at: float,
        replaces: str | None = None,
    ) -> OrderRecord:
        if qty_lots <= 0:
            raise ValueError(f"order {external_id}: qty must be at least one lot, got {qty_lots}")
        if price_ticks <= 0:
            raise ValueError(f"order {external_id}: price must be at least one tick, got {price_ticks}")
        return cls(
            external_id=external_id,
            market=market,
            side=side,
            price_ticks=price_ticks,
            qty_lots=qty_lots,
            created_at=at,
            updated_at=at,
            replaces=replaces,
        )

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    @property
    def may_be_open(self) -> bool:
        return self.state.may_be_open

    @property
    def remaining_lots(self) -> int:
        return 0 if self.state.is_terminal else self.qty_lots - self.filled_lots

    def apply(self, event: OrderEvent) -> OrderRecord:
        state = transition(self.state, event)
        changes: dict[str, Any] = {"state": state, "updated_at": event.at}
        venue_id = self.venue_id
        match event:
            case Acked():
                venue_id = event.venue_id
                changes["needs_lookup"] = False
            case Unknown():
                changes["needs_lookup"] = not state.is_terminal
            case SendFailed() | CancelFailed():
                changes["status_reason"] = event.reason
            case ReplaceSent():
                changes["replaced_by"] = event.new_external_id
            case NotFound():
                changes["needs_lookup"] = False
                if not self.state.is_terminal:
                    changes["status_reason"] = "NOT_FOUND"
            case VenueUpdate():
                venue_id = event.venue_id
                changes["filled_lots"] = self._next_filled(event, state)
                changes["needs_lookup"] = False
                if event.status_reason is not None:
                    changes["status_reason"] = event.status_reason
        if self.venue_id is not None and venue_id != self.venue_id:
            raise OrderError(
                f"order {self.external_id}: venue id {venue_id} does not match the known {self.venue_id}"
            )
        changes["venue_id"] = venue_id
        if isinstance(event, CancelFailed) and self.state is OrderState.PENDING_CANCEL:
            changes["replaced_by"] = None
            if venue_id is None:
                changes["state"] = OrderState.PENDING_NEW
            elif self.filled_lots > 0:
                changes["state"] = OrderState.PARTIALLY_FILLED
        return attrs.evolve(self, **changes)

    def _next_filled(self, update: VenueUpdate, state: OrderState) -> int:
        reported = update.filled_lots
        if isinstance(reported, bool) or not isinstance(reported, int) or not 0 <= reported <= self.qty_lots:
            raise FillOutOfRange(
                f"order {self.external_id}: venue reports {reported!r} lots filled of {self.qty_lots}"
            )
        if state is OrderState.FILLED:
            return self.qty_lots
        # A lower figure is a stale report (REST snapshot racing the stream): keep the higher.
        return max(self.filled_lots, reported)
