"""Supervision events: every supervisor step and breaker transition, as one union type.

The breaker's transitions (`BreakerOpened`, ...) are defined with its state machine in
`extmm.domain.breaker`.

`EventHub` fans events out to any number of subscribers (tests, metrics, dashboard), each
on its own bounded trio memory channel. Publishing never blocks: when a subscriber's
buffer is full the *oldest* queued event is dropped and counted, so a slow consumer sees
the latest state and supervision never waits on a reader.
"""

from __future__ import annotations

import enum
from typing import TypeAlias

import attrs
import trio

from extmm.domain.breaker import BreakerClosed, BreakerHalfOpen, BreakerOpened
from extmm.ops.secrets import redact_known

ERROR_TEXT_LIMIT = 400


def describe_error(error: BaseException | None, limit: int = ERROR_TEXT_LIMIT) -> str:
    """`Type: message` of an error (leaves of a group listed), with known secrets masked.

    Only the message is shown, never locals or tracebacks; producers of errors (the venue
    edge) keep credentials out of messages, and `redact_known` masks any that slip in.
    """
    if error is None:
        return "exited normally"
    if isinstance(error, BaseExceptionGroup):
        leaves = "; ".join(describe_error(inner, limit) for inner in error.exceptions)
        text = f"{type(error).__name__}: {error.message} [{leaves}]"
    else:
        message = str(error)
        text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    text = redact_known(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def join_path(supervisor: str, child: str) -> str:
    """A child's path from the root supervisor: "BTC-USD/quoter", or "BTC-USD" under the root."""
    return f"{supervisor}/{child}" if supervisor else child


class StopReason(enum.StrEnum):
    EXITED = "exited"  # the child returned by itself
    RESTART = "restart"  # stopped because a sibling failed (rest_for_one / one_for_all)
    TERMINATED = "terminated"  # `terminate_child` asked for it
    SHUTDOWN = "shutdown"  # the supervisor is stopping
    ESCALATION = "escalation"  # the supervisor gave up and is stopping everything


@attrs.frozen(kw_only=True)
class ChildStarted:
    at: float
    supervisor: str  # the supervisor's path below the root: "" for the root, "BTC-USD"
    child: str  # `path` ("BTC-USD/quoter") is what `Supervisor.kill` takes on the root
    incarnation: int  # 1 for the first start, +1 on every restart

    @property
    def path(self) -> str:
        return join_path(self.supervisor, self.child)


@attrs.frozen(kw_only=True)
class ChildFailed:
    at: float
    supervisor: str
    child: str
    error: str  # `describe_error` text
    before_ready: bool  # failed before calling task_status.started()

    @property
    def path(self) -> str:
        return join_path(self.supervisor, self.child)


@attrs.frozen(kw_only=True)
class ChildRestarting:
    at: float
    supervisor: str
    child: str
    delay: float  # seconds until the restart (backoff)
    restarts: int  # restarts of this child so far, this one included

    @property
    def path(self) -> str:
        return join_path(self.supervisor, self.child)


@attrs.frozen(kw_only=True)
class ChildStopped:
    at: float
    supervisor: str
    child: str
    reason: StopReason

    @property
    def path(self) -> str:
        return join_path(self.supervisor, self.child)


@attrs.frozen(kw_only=True)
class ChildHalted:
    """A child supervisor escalated and its `on_escalation` hook chose to halt it."""

    at: float
    supervisor: str
    child: str
    error: str

    @property
    def path(self) -> str:
        return join_path(self.supervisor, self.child)


@attrs.frozen(kw_only=True)
class SupervisorEscalated:
    """The restart intensity was exceeded (or a hook said so); all children are stopped."""

    at: float
    supervisor: str
    child: str  # the child whose failure tipped it over
    error: str

    @property
    def path(self) -> str:
        return join_path(self.supervisor, self.child)


SupervisionEvent: TypeAlias = (
    ChildStarted
    | ChildFailed
    | ChildRestarting
    | ChildStopped
    | ChildHalted
    | SupervisorEscalated
    | BreakerOpened
    | BreakerHalfOpen
    | BreakerClosed
)


@attrs.frozen(kw_only=True)
class EventHubStatistics:
    subscribers: int
    published: int
    dropped: int  # events dropped over all subscribers (oldest-first)


@attrs.define
class _Subscription:
    send: trio.MemorySendChannel[SupervisionEvent]
    # The hub keeps the original receive end to drop the oldest event on overflow;
    # the subscriber holds a clone, so `open_receive_channels == 1` means it has gone.
    receive: trio.MemoryReceiveChannel[SupervisionEvent]
    dropped: int = 0


class EventHub:
    """Fan-out of supervision events to bounded per-subscriber channels (drop-oldest)."""

    def __init__(self) -> None:
        self._subscriptions: list[_Subscription] = []
        self._published = 0
        self._dropped_by_departed = 0

    def subscribe(self, max_buffer: int = 256) -> trio.MemoryReceiveChannel[SupervisionEvent]:
        """A new receive channel that gets every event published from now on.

        Close it (`async with`) when done; the hub then forgets the subscription.
        """
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1 (drop-oldest needs a buffer)")
        send, receive = trio.open_memory_channel[SupervisionEvent](max_buffer)
        self._subscriptions.append(_Subscription(send=send, receive=receive))
        return receive.clone()

    def publish(self, event: SupervisionEvent) -> None:
        """Deliver `event` to every subscriber without blocking."""
        self._published += 1
        for sub in list(self._subscriptions):
            if sub.send.statistics().open_receive_channels <= 1:
                self._forget(sub)
                continue
            try:
                sub.send.send_nowait(event)
            except trio.WouldBlock:
                try:
                    sub.receive.receive_nowait()
                except trio.WouldBlock:  # a reader emptied it meanwhile: nothing to drop
                    pass
                else:
                    sub.dropped += 1
                sub.send.send_nowait(event)

    def statistics(self) -> EventHubStatistics:
        dropped = self._dropped_by_departed + sum(s.dropped for s in self._subscriptions)
        return EventHubStatistics(
            subscribers=len(self._subscriptions), published=self._published, dropped=dropped
        )

    def _forget(self, sub: _Subscription) -> None:
        self._subscriptions.remove(sub)
        self._dropped_by_departed += sub.dropped
        sub.send.close()
        sub.receive.close()
