"""Supervision as data, in Erlang/OTP vocabulary: child specs and supervisor specs.

A `ChildSpec` says how to start one child and what to do when it ends; a
`SupervisorSpec` holds the restart strategy, the restart intensity (at most `intensity`
restarts within `period` seconds) and the ordered children. `supervisors.supervisor`
runs them.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs

from extmm.domain.backoff import Backoff


class Restart(enum.StrEnum):
    """When a child that ended is started again.

    PERMANENT: always. A permanent child is meant to run forever, so returning normally
      is abnormal for it and restarts it (and counts towards the intensity).
    TRANSIENT: only after an abnormal exit (an exception); returning normally is done.
    TEMPORARY: never, however it ended.
    """

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.StrEnum):
    """Which children restart when one fails (OTP names).

    ONE_FOR_ONE: only the failed one. Siblings are independent.
    REST_FOR_ONE: the failed one and every child started after it, stopped in reverse
      order and started again in order. Later children depend on earlier ones.
    ONE_FOR_ALL: every child. They only work as a set.
    """

    ONE_FOR_ONE = "one_for_one"
    REST_FOR_ONE = "rest_for_one"
    ONE_FOR_ALL = "one_for_all"


class EscalationDecision(enum.StrEnum):
    """What a parent does when a child supervisor escalates (see `ChildSpec.on_escalation`)."""

    RESTART = "restart"  # apply the child's restart type as for any failure
    HALT = "halt"  # keep it stopped (state HALTED) until `restart_child`; no intensity cost
    ESCALATE = "escalate"  # the parent gives up too


# A child: `async def child(*, task_status=trio.TASK_STATUS_IGNORED)` that calls
# `task_status.started(value)` once it is really ready, then runs until cancelled.
StartFn = Callable[..., Awaitable[Any]]
EscalationHook = Callable[[Any], Awaitable[EscalationDecision]]


def _valid_id(_inst: object, _attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not value or "/" in value or value.strip() != value:
        raise ValueError(f"a child id must be a non-empty string without '/' or outer spaces, got {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class ChildSpec:
    """One supervised child.

    `start` is called with a `task_status=` keyword for every incarnation; it must call
    `task_status.started()` only when the child is really ready (an error before that
    surfaces from the supervisor's start and counts as a failure of this child; returning
    normally before it counts as "started and exited at once").

    `shutdown_timeout` is the child's teardown budget after cancellation: the supervisor
    cancels the incarnation and waits; `supervisors.teardown_scope()` gives the child a
    shielded scope with exactly that deadline for cleanup that must finish.

    `backoff` overrides the supervisor's default. `on_escalation` applies when the child
    is itself a supervisor that escalated (`Escalation`): the hook, awaited in the parent
    under a shield bounded by `shutdown_timeout`, returns an `EscalationDecision` (e.g.
    cancel the market's orders, then HALT). A failing or overdue hook escalates.
    """

    id: str = attrs.field(validator=_valid_id)
    start: StartFn = attrs.field(eq=False)
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = attrs.field(default=5.0, validator=_positive)
    backoff: Backoff | None = None
    on_escalation: EscalationHook | None = attrs.field(default=None, eq=False)


def _children(value: Iterable[ChildSpec]) -> tuple[ChildSpec, ...]:
    return tuple(value)


def _unique_children(_inst: object, _attribute: attrs.Attribute, value: tuple[ChildSpec, ...]) -> None:
    seen: set[str] = set()
    for child in value:
        if not isinstance(child, ChildSpec):
            raise TypeError(f"children must be ChildSpec, got {type(child).__name__}")
        if child.id in seen:
            raise ValueError(f"duplicate child id {child.id!r}")
        seen.add(child.id)


def _non_negative_int(_inst: object, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be an integer ≥ 0, got {value!r}")


@attrs.frozen(kw_only=True)
class SupervisorSpec:
    """A supervisor: children in start order, strategy, and restart intensity.

    More than `intensity` restarts within any `period` seconds (sliding window on
    `trio.current_time()`, as OTP's `add_restart`) escalates: every child is stopped in
    reverse order and `Supervisor.run` raises `Escalation`. `intensity=0` escalates on the
    first failure that would restart something.
    """

    id: str = attrs.field(validator=_valid_id)
    children: tuple[ChildSpec, ...] = attrs.field(converter=_children, validator=_unique_children)
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = attrs.field(default=3, validator=_non_negative_int)
    period: float = attrs.field(default=5.0, validator=_positive)
    backoff: Backoff = Backoff()

    def child(self, child_id: str) -> ChildSpec:
        for spec in self.children:
            if spec.id == child_id:
                return spec
        raise KeyError(child_id)
