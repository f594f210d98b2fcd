"""OTP-style supervisor on trio: ordered readiness, restart strategies, intensity, backoff.

    sup = Supervisor(SupervisorSpec(id="BTC-USD", strategy=Strategy.REST_FOR_ONE, children=(...)))
    await nursery.start(sup.run)      # returns once every child called task_status.started()
    sup.kill("quoter")                # fault injection: the child fails with InjectedFault
    sup.children()                    # per-child state, restarts, last error (dashboard)

One task (the loop inside `run`) owns all supervision state and does every start, stop
and restart in order; children report their end to it. Each incarnation runs in its own
cancel scope, shielded once the child is ready, so that only its supervisor stops it and
always in reverse start order, also when the supervisor itself is cancelled from outside.
When the restart intensity is exceeded the supervisor stops every child and `run` raises
`Escalation` (outside any exception group). A supervisor run inside a child of another
supervisor registers itself there, so `root.kill("BTC-USD/quoter")` reaches nested children,
and it publishes on its parent's `EventHub` and draws jitter from its parent's generator
unless given its own.

Paths name children from the root supervisor down: "BTC-USD" is a child of the root,
"BTC-USD/quoter" a child of that; events, `children()` and `kill()` use the same paths.

A child that is a supervisor can be built per incarnation with `supervisor_child(spec)`;
when its channels must be fresh per incarnation, write the start function yourself:

    async def market(*, task_status=trio.TASK_STATUS_IGNORED):
        send, receive = trio.open_memory_channel[BookTop](0)
        async with send, receive:
            await Supervisor(market_spec(send, receive)).run(task_status=task_status)
"""

from __future__ import annotations

import contextvars
import enum
import math
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import trio
from loguru import logger

from extmm.domain.backoff import BackoffState
from supervisors.events import (
    ChildFailed,
    ChildHalted,
    ChildRestarting,
    ChildStarted,
    ChildStopped,
    EventHub,
    StopReason,
    SupervisionEvent,
    SupervisorEscalated,
    describe_error,
    join_path,
)
from supervisors.spec import ChildSpec, EscalationDecision, Restart, Strategy, SupervisorSpec

DEFAULT_TEARDOWN_S = 5.0


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


class RestartWindow:
    """OTP's restart intensity: at most `intensity` restarts within any `period` seconds.

    A restart exactly `period` seconds old still counts (OTP keeps `t >= now - period`).
    """

    def __init__(self, intensity: int, period: float) -> None:
        self.intensity = intensity
        self.period = period
        self._times: deque[float] = deque()

    def add(self, now: float) -> bool:
        """Record a restart at `now`; False when that exceeds the intensity (escalate)."""
        self._forget_before(now - self.period)
        self._times.append(now)
        return len(self._times) <= self.intensity

    def count(self, now: float) -> int:
        self._forget_before(now - self.period)
        return len(self._times)

    def clear(self) -> None:
        self._times.clear()

    def _forget_before(self, threshold: float) -> None:
        while self._times and self._times[0] < threshold:
            self._times.popleft()


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
class _Exit:
    error: BaseException | None
    while_stopping: bool  # it ended after we had cancelled it


class _Slot:
    """Mutable run-time state of one child; owned by the supervisor loop."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.state = ChildState.STOPPED
        self.generation = 0
        self.scope: trio.CancelScope | None = None
        self.done = trio.Event()
        self.exit: _Exit | None = None
        self.stopping = False
        self.injected: BaseException | None = None
        self.due: float | None = None
        self.started_at: float | None = None
        self.restarts = 0
        self.failures = 0
        self.last_error: BaseException | None = None
        self.backoff: BackoffState | None = None
        self.nested: Supervisor | None = None
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


_UNSETTLED = (ChildState.PENDING, ChildState.STARTING, ChildState.BACKING_OFF)


@attrs.frozen
class _ChildContext:
    supervisor: Supervisor
    slot: _Slot


_CURRENT_CHILD: contextvars.ContextVar[_ChildContext | None] = contextvars.ContextVar(
    "supervisors_current_child", default=None
)


def current_child_path() -> str | None:
    """Path from the root of the supervised child the calling task belongs to ("BTC-USD/feed")."""
    ctx = _CURRENT_CHILD.get()
    return None if ctx is None else join_path(ctx.supervisor.path, ctx.slot.spec.id)


def teardown_scope(timeout: float | None = None) -> trio.CancelScope:
    """A shielded scope for cleanup that must run even while cancelled, bounded by a deadline.

    Default deadline: now + the enclosing child's `shutdown_timeout` (5 s outside one).
    Use it in a `finally:` / `except trio.Cancelled:` block, e.g. to cancel orders.
    """
    if timeout is None:
        ctx = _CURRENT_CHILD.get()
        timeout = ctx.slot.spec.shutdown_timeout if ctx is not None else DEFAULT_TEARDOWN_S
    return trio.CancelScope(shield=True, deadline=trio.current_time() + timeout)


class _Readiness:
    """The `task_status` a child sees: forwards `started()` and tells the supervisor."""

    def __init__(self, status: trio.TaskStatus[Any], on_started: Callable[[], None]) -> None:
        self._status = status
        self._on_started = on_started
        self.is_started = False

    def started(self, value: Any = None) -> None:
        if self.is_started:
            raise RuntimeError("called 'started' twice on the same task status")
        self.is_started = True
        self._status.started(value)
        self._on_started()


def _simplify(error: BaseException) -> BaseException:
    """Unwrap single-leaf exception groups (as made by `except*` and strict nurseries)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


@attrs.define
class _Request:
    kind: str  # "terminate" | "restart"
    slot: _Slot
    done: trio.Event = attrs.Factory(trio.Event)
    error: BaseException | None = None


class Supervisor:
    """Runs a `SupervisorSpec`. One `run()` at a time; each run starts from fresh state."""

    def __init__(
        self,
        spec: SupervisorSpec,
        *,
        events: EventHub | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.path = ""  # below the root: "" for a root, "BTC-USD" for a child supervisor; kill() paths
        self.name = spec.id  # for logs: "root/BTC-USD"
        self._events = events
        self._rng = rng
        self._hub: EventHub | None = events
        self._slots = [_Slot(child) for child in spec.children]
        self._by_id = {slot.spec.id: slot for slot in self._slots}
        self._window = RestartWindow(spec.intensity, spec.period)
        self._state = SupervisorState.IDLE
        self._nursery: trio.Nursery | None = None
        self._loop_scope: trio.CancelScope | None = None
        self._wakeup = trio.Event()
        self._requests: list[_Request] = []
        self._running = False
        self._stop_requested = False
        self._ready = False
        self._parent: _ChildContext | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def state(self) -> SupervisorState:
        return self._state

    # -- running --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, report ready (value: this supervisor), supervise.

        Returns after `stop()` once every child has stopped (reverse order). Raises
        `Escalation` when the restart intensity is exceeded, after stopping every child;
        if that happens during the initial start, it surfaces from `nursery.start`.
        """
        if self._running:
            raise RuntimeError(f"supervisor {self.name} is already running")
        self._running = True
        self._attach(_CURRENT_CHILD.get())
        escalation: Escalation | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    escalation = await self._supervise(task_status)
                finally:
                    self._state = SupervisorState.STOPPING
                    reason = StopReason.ESCALATION if escalation is not None else StopReason.SHUTDOWN
                    with trio.CancelScope(shield=True):
                        await self._stop_all(reason)
        finally:
            self._nursery = None
            self._loop_scope = None
            self._running = False
            self._detach()
            self._fail_requests()
            self._state = SupervisorState.ESCALATED if escalation is not None else SupervisorState.STOPPED
        if escalation is not None:
            logger.error("{}", escalation)
            self._publish(
                SupervisorEscalated(
                    at=trio.current_time(),
                    supervisor=self.path,
                    child=escalation.child,
                    error=describe_error(escalation.last_error),
                )
            )
            raise escalation

    def stop(self) -> None:
        """Ask `run` to stop every child (reverse order) and return; aborts a start in
        progress. No-op when not running. Before readiness, `run` then returns without
        calling `task_status.started()`."""
        if not self._running:
            return
        self._stop_requested = True
        if self._loop_scope is not None:
            self._loop_scope.cancel()

    # -- control --------------------------------------------------------------------

    def kill(self, path: str, exc: BaseException | None = None) -> bool:
        """Make the child at `path` ("quoter", "BTC-USD/quoter") fail now.

        Its incarnation is cancelled and it is treated as having crashed with `exc`
        (default `InjectedFault`), so its restart type and the strategy apply. False when
        nothing by that name is running (backing off, stopped, already stopping).
        """
        slot, rest = self._resolve(path)
        if rest:
            nested = slot.nested
            if nested is None:
                if slot.is_supervisor:
                    return False
                raise UnknownChild(f"{self._name_of(slot)} is not a supervisor")
            return nested.kill(rest, exc)
        if slot.scope is None or slot.stopping or slot.done.is_set():
            return False
        slot.injected = exc if exc is not None else InjectedFault(join_path(self.path, slot.spec.id))
        logger.warning("injecting a fault into {}", self._name_of(slot))
        slot.scope.cancel()
        return True

    async def terminate_child(self, path: str) -> None:
        """Stop a child and keep it stopped (no restart) until `restart_child`."""
        await self._request("terminate", path)

    async def restart_child(self, path: str) -> None:
        """Start a stopped, failed or halted child now (backoff reset, no intensity cost).

        Returns after the start attempt; a failing start is handled like any failure.
        """
        await self._request("restart", path)

    def nested(self, path: str) -> Supervisor | None:
        """The running child supervisor at `path` ("BTC-USD"), or None."""
        slot, rest = self._resolve(path)
        if slot.nested is None or not rest:
            return slot.nested
        return slot.nested.nested(rest)

    # -- introspection --------------------------------------------------------------

    def children(self) -> tuple[ChildInfo, ...]:
        return tuple(
            ChildInfo(
                id=slot.spec.id,
                path=join_path(self.path, slot.spec.id),
                state=slot.state,
                restart=slot.spec.restart,
                incarnation=slot.generation,
                restarts=slot.restarts,
                failures=slot.failures,
                last_error=None if slot.last_error is None else describe_error(slot.last_error),
                started_at=slot.started_at,
                next_start_at=slot.due,
                nested=None if slot.nested is None else slot.nested.statistics(),
            )
            for slot in self._slots
        )

    def statistics(self) -> SupervisorStatistics:
        try:
            in_window = self._window.count(trio.current_time())
        except RuntimeError:  # outside trio.run
            in_window = self._window.count(-math.inf)
        return SupervisorStatistics(
            id=self.spec.id,
            path=self.path,
            name=self.name,
            state=self._state,
            strategy=self.spec.strategy,
            intensity=self.spec.intensity,
            period=self.spec.period,
            restarts_in_window=in_window,
            children=self.children(),
        )

    # -- the loop ---------------------------------------------------------------------

    def _attach(self, parent: _ChildContext | None) -> None:
        self._parent = parent
        if parent is None:
            self.path = ""
            self.name = self.spec.id
            self._hub = self._events
            rng = self._rng if self._rng is not None else random.Random()
        else:
            self.path = join_path(parent.supervisor.path, parent.slot.spec.id)
            self.name = f"{parent.supervisor.name}/{parent.slot.spec.id}"
            self._hub = self._events if self._events is not None else parent.supervisor._hub
            rng = self._rng if self._rng is not None else parent.supervisor._effective_rng
            parent.slot.nested = self
            parent.slot.is_supervisor = True
        self._effective_rng: random.Random = rng
        self._stop_requested = False
        self._window.clear()
        self._requests.clear()
        self._slots = [_Slot(child) for child in self.spec.children]
        self._by_id = {slot.spec.id: slot for slot in self._slots}
        for slot in self._slots:
            slot.backoff = BackoffState(slot.spec.backoff or self.spec.backoff, rng)

    def _detach(self) -> None:
        parent = self._parent
        if parent is not None and parent.slot.nested is self:
            parent.slot.nested = None

    async def _supervise(self, task_status: trio.TaskStatus[Supervisor]) -> Escalation | None:
        self._state = SupervisorState.STARTING
        now = trio.current_time()
        for slot in self._slots:
            slot.state = ChildState.PENDING
            slot.due = now
        self._ready = False
        with trio.CancelScope() as self._loop_scope:
            if self._stop_requested:
                self._loop_scope.cancel()
            while True:
                self._wakeup = trio.Event()
                escalation = await self._step()
                if escalation is not None:
                    return escalation
                if not self._ready and not any(slot.state in _UNSETTLED for slot in self._slots):
                    self._ready = True
                    self._state = SupervisorState.RUNNING
                    task_status.started(self)
                with trio.move_on_at(self._next_start_at()):
                    await self._wakeup.wait()
        logger.info("supervisor {} stopping on request", self.name)
        return None

    async def _step(self) -> Escalation | None:
        """Serve requests, handle child exits, start due children, until nothing is left."""
        while True:
            escalation: Escalation | None = None
            if self._requests:
                escalation = await self._serve(self._requests.pop(0))
            elif (slot := self._first_exited()) is not None:
                exit_, slot.exit = slot.exit, None
                assert exit_ is not None
                escalation = await self._on_end(slot, exit_.error, before_ready=False)
            elif (slot := self._first_due()) is not None:
                escalation = await self._start(slot)
            else:
                return None
            if escalation is not None:
                return escalation

    def _first_exited(self) -> _Slot | None:
        for slot in self._slots:
            if slot.exit is not None and not slot.stopping:
                return slot
        return None

    def _startable(self) -> list[_Slot]:
        """Scheduled children that may start when due. Until the supervisor is first ready
        the start is strictly in order: nothing starts before every earlier child is up
        (or given up), even if an earlier one is backing off."""
        out = []
        for slot in self._slots:
            if slot.due is not None:
                out.append(slot)
            if not self._ready and slot.state in _UNSETTLED:
                break
        return out

    def _first_due(self) -> _Slot | None:
        now = trio.current_time()
        return next((slot for slot in self._startable() if slot.due is not None and slot.due <= now), None)

    def _next_start_at(self) -> float:
        return min((slot.due for slot in self._startable() if slot.due is not None), default=math.inf)

    async def _start(self, slot: _Slot) -> Escalation | None:
        assert self._nursery is not None
        slot.due = None
        slot.generation += 1
        slot.scope = trio.CancelScope()
        slot.done = trio.Event()
        slot.exit = None
        slot.stopping = False
        slot.injected = None
        slot.state = ChildState.STARTING
        error: BaseException | None = None
        try:
            await self._nursery.start(self._incarnation, slot, slot.generation)
        except* Exception as group:
            error = _simplify(group)
        if error is not None:
            slot.scope = None
            return await self._on_end(slot, error, before_ready=True)
        slot.started_at = trio.current_time()
        slot.state = ChildState.RUNNING
        logger.info("{} started (incarnation {})", self._name_of(slot), slot.generation)
        self._publish(
            ChildStarted(
                at=slot.started_at, supervisor=self.path, child=slot.spec.id, incarnation=slot.generation
            )
        )
        return None

    async def _incarnation(self, slot: _Slot, generation: int, task_status: trio.TaskStatus[Any]) -> None:
        """One life of a child, as a task of our nursery. Raises only before readiness."""
        scope = slot.scope
        assert scope is not None
        task = trio.lowlevel.current_task()
        _CURRENT_CHILD.set(_ChildContext(self, slot))

        def on_started() -> None:
            # Trio leaves the task in start()'s temporary nursery when the starter is being
            # cancelled; shielding it there would hang that nursery forever.
            if task.parent_nursery is self._nursery:
                scope.shield = True

        readiness = _Readiness(task_status, on_started)
        error: BaseException | None = None
        try:
            try:
                with scope:
                    await slot.spec.start(task_status=readiness)
            except* Exception as group:
                error = _simplify(group)
            if slot.injected is not None:
                error = slot.injected
            if not readiness.is_started:
                if error is not None:
                    raise error
                readiness.started()  # returned before declaring readiness: started, then exited
        finally:
            if readiness.is_started and slot.generation == generation:
                slot.exit = _Exit(error, while_stopping=slot.stopping)
                if not slot.stopping:
                    self._wakeup.set()
            slot.done.set()

    async def _on_end(
        self, slot: _Slot, error: BaseException | None, *, before_ready: bool
    ) -> Escalation | None:
        """Apply the restart type, the escalation hook and the strategy to an ended child."""
        now = trio.current_time()
        healthy_for = 0.0 if before_ready or slot.started_at is None else now - slot.started_at
        slot.scope = None
        child_name = self._name_of(slot)
        if error is None:
            slot.state = ChildState.STOPPED
            self._publish(
                ChildStopped(at=now, supervisor=self.path, child=slot.spec.id, reason=StopReason.EXITED)
            )
            if slot.spec.restart is not Restart.PERMANENT:
                logger.info("{} exited", child_name)
                return None
            logger.warning("{} is permanent but returned; restarting it", child_name)
        else:
            self._record_failure(slot, error, before_ready=before_ready, at=now)
            if slot.spec.restart is Restart.TEMPORARY:
                return None
            if isinstance(error, Escalation) and slot.spec.on_escalation is not None:
                decision = await self._ask_escalation_hook(slot, error)
                if decision is EscalationDecision.HALT:
                    slot.state = ChildState.HALTED
                    logger.error("{} halted after escalating", child_name)
                    self._publish(
                        ChildHalted(
                            at=trio.current_time(),
                            supervisor=self.path,
                            child=slot.spec.id,
                            error=describe_error(error),
                        )
                    )
                    return None
                if decision is EscalationDecision.ESCALATE:
                    return Escalation(self.name, slot.spec.id, error)
        return await self._restart(slot, error, healthy_for=healthy_for)

    def _record_failure(self, slot: _Slot, error: BaseException, *, before_ready: bool, at: float) -> None:
        slot.failures += 1
        slot.last_error = error
        slot.state = ChildState.FAILED
        when = "while starting" if before_ready else "while running"
        logger.opt(exception=error).warning(
            "{} failed {}: {}", self._name_of(slot), when, describe_error(error)
        )
        self._publish(
            ChildFailed(
                at=at,
                supervisor=self.path,
                child=slot.spec.id,
                error=describe_error(error),
                before_ready=before_ready,
            )
        )

    async def _ask_escalation_hook(self, slot: _Slot, error: Escalation) -> EscalationDecision:
        hook = slot.spec.on_escalation
        assert hook is not None
        decision: object = EscalationDecision.ESCALATE  # whatever the hook returns is checked below
        with trio.move_on_after(slot.spec.shutdown_timeout, shield=True) as scope:
            try:
                decision = await hook(error)
            except Exception as exc:
                logger.opt(exception=exc).error("on_escalation hook of {} failed", self._name_of(slot))
                decision = EscalationDecision.ESCALATE
        if scope.cancelled_caught:
            logger.error(
                "on_escalation hook of {} overran {}s", self._name_of(slot), slot.spec.shutdown_timeout
            )
            decision = EscalationDecision.ESCALATE
        if not isinstance(decision, EscalationDecision):
            logger.error("on_escalation hook of {} returned {!r}", self._name_of(slot), decision)
            decision = EscalationDecision.ESCALATE
        return decision

    async def _restart(
        self, slot: _Slot, cause: BaseException | None, *, healthy_for: float
    ) -> Escalation | None:
        if not self._window.add(trio.current_time()):
            return Escalation(self.name, slot.spec.id, cause)
        assert slot.backoff is not None
        delay = slot.backoff.next_delay(healthy_for=healthy_for)
        group = self._restart_group(slot)
        for sibling in reversed(group):
            if sibling is not slot:
                await self._stop_slot(sibling, StopReason.RESTART)
        due = trio.current_time() + delay
        for member in group:
            if member is not slot and member.spec.restart is Restart.TEMPORARY:
                continue  # OTP: temporary children are never restarted, not even with a group
            member.restarts += 1
            member.due = due
            member.state = ChildState.BACKING_OFF
            self._publish(
                ChildRestarting(
                    at=trio.current_time(),
                    supervisor=self.path,
                    child=member.spec.id,
                    delay=delay,
                    restarts=member.restarts,
                )
            )
        logger.info(
            "restarting {} of {} in {:.3f}s ({})",
            ", ".join(m.spec.id for m in group),
            self.name,
            delay,
            self.spec.strategy.value,
        )
        return None

    def _restart_group(self, slot: _Slot) -> list[_Slot]:
        match self.spec.strategy:
            case Strategy.ONE_FOR_ONE:
                return [slot]
            case Strategy.REST_FOR_ONE:
                candidates = self._slots[self._slots.index(slot) :]
            case Strategy.ONE_FOR_ALL:
                candidates = self._slots
        return [s for s in candidates if s is slot or s.active]

    async def _stop_slot(self, slot: _Slot, reason: StopReason) -> None:
        """Cancel one incarnation and wait for its end; report how it really ended."""
        at = trio.current_time()
        if slot.scope is None:
            was_scheduled = slot.due is not None
            slot.due = None
            if slot.state in (ChildState.BACKING_OFF, ChildState.PENDING):
                slot.state = ChildState.STOPPED
                if was_scheduled and slot.generation > 0:
                    self._publish(
                        ChildStopped(at=at, supervisor=self.path, child=slot.spec.id, reason=reason)
                    )
            return
        slot.stopping = True
        slot.state = ChildState.STOPPING
        slot.scope.cancel()
        with trio.move_on_after(slot.spec.shutdown_timeout):
            await slot.done.wait()
        if not slot.done.is_set():
            logger.error(
                "{} still running {}s after cancellation; waiting (trio cannot abandon a task, and "
                "two incarnations at once would be worse)",
                self._name_of(slot),
                slot.spec.shutdown_timeout,
            )
            await slot.done.wait()
        slot.scope = None
        exit_, slot.exit = slot.exit, None
        slot.state = ChildState.STOPPED
        at = trio.current_time()
        if exit_ is not None and not exit_.while_stopping:
            # It had ended by itself before we got to it: report that, not our stop.
            if exit_.error is not None:
                self._record_failure(slot, exit_.error, before_ready=False, at=at)
            else:
                self._publish(
                    ChildStopped(at=at, supervisor=self.path, child=slot.spec.id, reason=StopReason.EXITED)
                )
            return
        if exit_ is not None and exit_.error is not None and not isinstance(exit_.error, InjectedFault):
            logger.warning("{} raised while stopping: {}", self._name_of(slot), describe_error(exit_.error))
        logger.info("{} stopped ({})", self._name_of(slot), reason.value)
        self._publish(ChildStopped(at=at, supervisor=self.path, child=slot.spec.id, reason=reason))

    async def _stop_all(self, reason: StopReason) -> None:
        for slot in reversed(self._slots):
            try:
                await self._stop_slot(slot, reason)
            except Exception as exc:  # never leave the rest running because of one
                logger.opt(exception=exc).error("stopping {} failed", self._name_of(slot))

    # -- requests from other tasks ------------------------------------------------------

    def _resolve(self, path: str) -> tuple[_Slot, str]:
        head, _, rest = path.partition("/")
        slot = self._by_id.get(head)
        if slot is None:
            raise UnknownChild(f"{self.name} has no child {head!r}")
        return slot, rest

    async def _request(self, kind: str, path: str) -> None:
        slot, rest = self._resolve(path)
        if rest:
            nested = slot.nested
            if nested is None:
                raise UnknownChild(f"{self._name_of(slot)} is not a running supervisor")
            await nested._request(kind, rest)
            return
        if self._loop_scope is None:
            raise RuntimeError(f"supervisor {self.name} is not running")
        request = _Request(kind=kind, slot=slot)
        self._requests.append(request)
        self._wakeup.set()
        try:
            await request.done.wait()
        finally:
            if not request.done.is_set() and request in self._requests:
                self._requests.remove(request)
        if request.error is not None:
            raise request.error

    async def _serve(self, request: _Request) -> Escalation | None:
        slot = request.slot
        escalation: Escalation | None = None
        try:
            if request.kind == "terminate":
                await self._stop_slot(slot, StopReason.TERMINATED)
                if slot.state is not ChildState.FAILED:
                    slot.state = ChildState.STOPPED
            elif slot.active:
                request.error = RuntimeError(f"{self._name_of(slot)} is {slot.state.value}, not stopped")
            else:
                assert slot.backoff is not None
                slot.backoff.reset()
                escalation = await self._start(slot)
        finally:
            request.done.set()
        return escalation

    def _fail_requests(self) -> None:
        for request in self._requests:
            request.error = RuntimeError(f"supervisor {self.name} stopped")
            request.done.set()
        self._requests.clear()

    def _name_of(self, slot: _Slot) -> str:
        return f"{self.name}/{slot.spec.id}"

    def _publish(self, event: SupervisionEvent) -> None:
        if self._hub is not None:
            self._hub.publish(event)


def supervisor_child(
    spec: SupervisorSpec,
    *,
    id: str | None = None,  # noqa: A002 - OTP's name for it
    restart: Restart = Restart.PERMANENT,
    shutdown_timeout: float | None = None,
    on_escalation: Any = None,
    events: EventHub | None = None,
    rng: random.Random | None = None,
) -> ChildSpec:
    """A child that runs a fresh `Supervisor(spec)` per incarnation.

    Default shutdown budget: the sum of its children's plus one second.
    """

    async def start(*, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        await Supervisor(spec, events=events, rng=rng).run(task_status=task_status)

    if shutdown_timeout is None:
        shutdown_timeout = sum(child.shutdown_timeout for child in spec.children) + 1.0
    return ChildSpec(
        id=id or spec.id,
        start=start,
        restart=restart,
        shutdown_timeout=shutdown_timeout,
        on_escalation=on_escalation,
    )
