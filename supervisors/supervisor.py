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
supervisor, handed that child's `task_status` (a `ChildStatus`: the context is passed
explicitly, not through a context variable), registers itself there, so `root.kill("BTC-USD/quoter")` reaches nested children,
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

import math
import random
from typing import Any

import attrs
import trio
from loguru import logger

from extmm.domain.backoff import BackoffState
from extmm.domain.restarts import RestartWindow
from supervisors.child import (
    UNSETTLED,
    ChildExit,
    ChildInfo,
    ChildState,
    ChildStatus,
    Escalation,
    InjectedFault,
    NestedSupervisor,
    Slot,
    SupervisorState,
    SupervisorStatistics,
    UnknownChild,
    current_child_path,
    simplify,
    teardown_scope,
)
from supervisors.events import (
    ChildStarted,
    EventHub,
    StopReason,
    SupervisorEscalated,
    describe_error,
    join_path,
)
from supervisors.lifecycle import ChildLifecycle
from supervisors.spec import ChildSpec, Restart, SupervisorSpec

__all__ = [  # the supervisor's vocabulary, importable from here
    "ChildInfo",
    "ChildState",
    "Escalation",
    "InjectedFault",
    "RestartWindow",
    "Supervisor",
    "SupervisorState",
    "SupervisorStatistics",
    "UnknownChild",
    "current_child_path",
    "supervisor_child",
    "teardown_scope",
]


@attrs.define
class _Request:
    kind: str  # "terminate" | "restart"
    slot: Slot
    done: trio.Event = attrs.Factory(trio.Event)
    error: BaseException | None = None


class Supervisor(ChildLifecycle):
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
        self._slots = [Slot(child) for child in spec.children]
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
        self._parent: ChildStatus | None = None

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
        self._attach(task_status if isinstance(task_status, ChildStatus) else None)
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

    def nested(self, path: str) -> NestedSupervisor | None:
        """The running child supervisor at `path` ("BTC-USD"), or None."""
        slot, rest = self._resolve(path)
        if slot.nested is None or not rest:
            return slot.nested
        return slot.nested.nested(rest)

    # -- introspection --------------------------------------------------------------

    def children(self) -> tuple[ChildInfo, ...]:
        return tuple(slot.info(join_path(self.path, slot.spec.id)) for slot in self._slots)

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

    def _attach(self, parent: ChildStatus | None) -> None:
        """`parent`: the task_status of the supervised child this run is inside, if any."""
        self._parent = parent
        if parent is None:
            self.path = ""
            self.name = self.spec.id
            self._hub = self._events
            rng = self._rng if self._rng is not None else random.Random()
        else:
            self.path = parent.path
            self.name = parent.name
            self._hub = self._events if self._events is not None else parent.hub
            rng = self._rng if self._rng is not None else parent.rng
            parent.slot.nested = self
            parent.slot.is_supervisor = True
        self._effective_rng: random.Random = rng
        self._stop_requested = False
        self._window.clear()
        self._requests.clear()
        self._slots = [Slot(child) for child in self.spec.children]
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
                if not self._ready and not any(slot.state in UNSETTLED for slot in self._slots):
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

    def _first_exited(self) -> Slot | None:
        for slot in self._slots:
            if slot.exit is not None and not slot.stopping:
                return slot
        return None

    def _startable(self) -> list[Slot]:
        """Scheduled children that may start when due. Until the supervisor is first ready
        the start is strictly in order: nothing starts before every earlier child is up
        (or given up), even if an earlier one is backing off."""
        out = []
        for slot in self._slots:
            if slot.due is not None:
                out.append(slot)
            if not self._ready and slot.state in UNSETTLED:
                break
        return out

    def _first_due(self) -> Slot | None:
        now = trio.current_time()
        return next((slot for slot in self._startable() if slot.due is not None and slot.due <= now), None)

    def _next_start_at(self) -> float:
        return min((slot.due for slot in self._startable() if slot.due is not None), default=math.inf)

    async def _start(self, slot: Slot) -> Escalation | None:
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
            error = simplify(group)
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

    async def _incarnation(self, slot: Slot, generation: int, task_status: trio.TaskStatus[Any]) -> None:
        """One life of a child, as a task of our nursery. Raises only before readiness."""
        scope = slot.scope
        assert scope is not None
        task = trio.lowlevel.current_task()

        def on_started() -> None:
            # Trio leaves the task in start()'s temporary nursery when the starter is being
            # cancelled; shielding it there would hang that nursery forever.
            if task.parent_nursery is self._nursery:
                scope.shield = True

        readiness = ChildStatus(
            task_status,
            on_started,
            slot=slot,
            path=join_path(self.path, slot.spec.id),
            name=self._name_of(slot),
            hub=self._hub,
            rng=self._effective_rng,
        )
        error: BaseException | None = None
        try:
            try:
                with scope:
                    await slot.spec.start(task_status=readiness)
            except* Exception as group:
                error = simplify(group)
            if slot.injected is not None:
                error = slot.injected
            if not readiness.is_started:
                if error is not None:
                    raise error
                readiness.started()  # returned before declaring readiness: started, then exited
        finally:
            if readiness.is_started and slot.generation == generation:
                slot.exit = ChildExit(error, while_stopping=slot.stopping)
                if not slot.stopping:
                    self._wakeup.set()
            slot.done.set()


    def _resolve(self, path: str) -> tuple[Slot, str]:
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
