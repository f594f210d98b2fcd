"""A supervised child as its supervisor sees it: states, failures, the per-child slot,
and `ChildStatus`, the `task_status` every incarnation gets.

Context is passed explicitly, never through a context variable: `ChildStatus` carries the
child's path, its teardown budget and what a supervisor run inside the child inherits (its
slot to register in, the events hub, the jitter source). A child that runs a supervisor
hands its `task_status` to `Supervisor.run`; `teardown_scope(task_status)` and
`current_child_path(task_status)` read the same object.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from extmm.domain.backoff import BackoffState
from supervisors.events import EventHub, describe_error
from supervisors.spec import ChildSpec, Restart, Strategy

DEFAULT_TEARDOWN_S = 5.0  # teardown_scope() outside a supervised child


class ChildState(enum.StrEnum):
    PENDING = "pending"  # waiting for its first start in this run
    STARTING = "starting"  # started, not yet ready
    RUNNING = "running"
    BACKING_OFF = "backing_off"  # waiting for its restart time
    STOPPING = "stopping"  # cancelled, tearing down
    STOPPED = "stopped"  # ended normally, terminated, or not running
    FAILED = "failed"  # crashed and will not be restarted (or until the restart is scheduled)
    HALTED = "halted"  # an escalating child supervisor that `on_escalation` chose to halt


class SupervisorState(enum.StrEnum):
    IDLE = "idle"  # never run
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ESCALATED = "escalated"


class InjectedFault(Exception):
    """The failure `Supervisor.kill` puts on a child (fire drills and tests)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"fault injected into {path}")
        self.path = path


class Escalation(Exception):
    """A supervisor gave up: raised by `Supervisor.run` after every child has stopped."""

    def __init__(self, supervisor: str, child: str, last_error: BaseException | None) -> None:
        super().__init__(f"supervisor {supervisor} gave up after {child}: {describe_error(last_error)}")
        self.supervisor = supervisor
        self.child = child
        self.last_error = last_error


class UnknownChild(LookupError):
    """No child (or running child supervisor) by that path."""



@attrs.frozen(kw_only=True)
class ChildInfo:
    id: str
    path: str
    state: ChildState
    restart: Restart
    incarnation: int  # starts so far in this run of the supervisor
    restarts: int  # restarts scheduled in this run
    failures: int
    last_error: str | None
    started_at: float | None  # trio time of the last successful start
    next_start_at: float | None  # when a pending/backing-off child starts
    nested: SupervisorStatistics | None  # when the child is a running supervisor


@attrs.frozen(kw_only=True)
class SupervisorStatistics:
    id: str
    path: str  # below the root ("" for the root itself)
    name: str  # for people: "root/BTC-USD"
    state: SupervisorState
    strategy: Strategy
    intensity: int
    period: float
    restarts_in_window: int
    children: tuple[ChildInfo, ...]


@attrs.frozen
class ChildExit:
    error: BaseException | None
    while_stopping: bool  # it ended after we had cancelled it



class NestedSupervisor(Protocol):
    """A supervisor running as a child, as its parent reaches it."""

    def kill(self, path: str, exc: BaseException | None = None) -> bool: ...

    def nested(self, path: str) -> NestedSupervisor | None: ...

    def children(self) -> tuple[ChildInfo, ...]: ...

    def statistics(self) -> SupervisorStatistics: ...

    async def _request(self, kind: str, path: str) -> None: ...


class Slot:
    """Mutable run-time state of one child; owned by the supervisor loop."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.state = ChildState.STOPPED
        self.generation = 0
        self.scope: trio.CancelScope | None = None
        self.done = trio.Event()
        self.exit: ChildExit | None = None
        self.stopping = False
        self.injected: BaseException | None = None
        self.due: float | None = None
        self.started_at: float | None = None
        self.restarts = 0
        self.failures = 0
        self.last_error: BaseException | None = None
        self.backoff: BackoffState | None = None
        self.nested: NestedSupervisor | None = None
        self.is_supervisor = False

    @property
    def active(self) -> bool:
        """Running or about to: part of a rest_for_one / one_for_all group restart."""
        return self.state in (
            ChildState.PENDING,
            ChildState.STARTING,
            ChildState.RUNNING,
            ChildState.BACKING_OFF,
            ChildState.STOPPING,
        )

    def info(self, path: str) -> ChildInfo:
        return ChildInfo(
            id=self.spec.id,
            path=path,
            state=self.state,
            restart=self.spec.restart,
            incarnation=self.generation,
            restarts=self.restarts,
            failures=self.failures,
            last_error=None if self.last_error is None else describe_error(self.last_error),
            started_at=self.started_at,
            next_start_at=self.due,
            nested=None if self.nested is None else self.nested.statistics(),
        )


UNSETTLED = (ChildState.PENDING, ChildState.STARTING, ChildState.BACKING_OFF)


class ChildStatus:
    """The `task_status` a child sees: forwards `started()` and tells the supervisor, and
    carries the child's context (`path`, `slot`, and the `hub` and `rng` a supervisor
    started inside the child inherits)."""

    def __init__(
        self,
        status: trio.TaskStatus[Any],
        on_started: Callable[[], None],
        *,
        slot: Slot,
        path: str,
        name: str,
        hub: EventHub | None,
        rng: random.Random,
    ) -> None:
        self._status = status
        self._on_started = on_started
        self.slot = slot
        self.path = path  # from the root: "BTC-USD/feed"
        self.name = name  # for people: "root/BTC-USD/feed"
        self.hub = hub
        self.rng = rng
        self.is_started = False

    @property
    def shutdown_timeout(self) -> float:
        return self.slot.spec.shutdown_timeout

    def started(self, value: Any = None) -> None:
        if self.is_started:
            raise RuntimeError("called 'started' twice on the same task status")
        self.is_started = True
        self._status.started(value)
        self._on_started()


def current_child_path(task_status: object) -> str | None:
    """Path from the root of the supervised child that got this `task_status` ("BTC-USD/feed");
    None when it is not a supervisor's."""
    return task_status.path if isinstance(task_status, ChildStatus) else None


def teardown_scope(within: ChildStatus | float | object | None = None) -> trio.CancelScope:
    """A shielded scope for cleanup that must run even while cancelled, bounded by a deadline.

    Deadline: now + `within` seconds, or + the child's `shutdown_timeout` when `within` is
    the child's `task_status` (`DEFAULT_TEARDOWN_S` for anything else). Use it in a
    `finally:` / `except trio.Cancelled:` block, e.g. to cancel orders.
    """
    if isinstance(within, ChildStatus):
        timeout = within.shutdown_timeout
    elif isinstance(within, int | float):
        timeout = float(within)
    else:
        timeout = DEFAULT_TEARDOWN_S
    return trio.CancelScope(shield=True, deadline=trio.current_time() + timeout)


def simplify(error: BaseException) -> BaseException:
    """Unwrap single-leaf exception groups (as made by `except*` and strict nurseries)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
