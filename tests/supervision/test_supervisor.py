"""Supervisors under trio's MockClock: strategies, readiness, backoff, intensity, restart
types, cancellation, fault injection, nesting and the event stream, with exact times."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from extmm.domain.backoff import Backoff, BackoffState
from supervisors.events import (
    ChildFailed,
    ChildHalted,
    ChildRestarting,
    ChildStarted,
    ChildStopped,
    EventHub,
    SupervisorEscalated,
)
from supervisors.spec import ChildSpec, EscalationDecision, Restart, Strategy, SupervisorSpec
from supervisors.supervisor import (
    ChildState,
    Escalation,
    InjectedFault,
    RestartWindow,
    Supervisor,
    UnknownChild,
    current_child_path,
    supervisor_child,
    teardown_scope,
)

Behaviour = Callable[[int], Any]  # incarnation number (1-based) → a value for that run


def _per_incarnation(value: Any) -> Behaviour:
    return value if callable(value) else (lambda _n: value)


class Lab:
    """Scripted children that log what they do, plus the supervisor's event stream."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str, str]] = []
        self.incarnations: dict[str, int] = {}
        self.hub = EventHub()
        self.events = self.hub.subscribe(10_000)

    def child(
        self,
        name: str,
        *,
        restart: Restart = Restart.PERMANENT,
        ready_after: Any = 0.0,
        fail_before_ready: Any = False,
        fail_after: Any = None,
        return_after: Any = None,
        teardown: float = 0.0,
        shutdown_timeout: float = 5.0,
        backoff: Backoff | None = None,
    ) -> ChildSpec:
        ready_after_, fail_before_ready_ = _per_incarnation(ready_after), _per_incarnation(fail_before_ready)
        fail_after_, return_after_ = _per_incarnation(fail_after), _per_incarnation(return_after)

        async def start(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            n = self.incarnations[name] = self.incarnations.get(name, 0) + 1
            self.note(name, "starting")
            await trio.sleep(ready_after_(n))
            if fail_before_ready_(n):
                self.note(name, "broken")
                raise RuntimeError(f"{name} cannot start")
            task_status.started(name)
            self.note(name, "ready")
            try:
                if fail_after_(n) is not None:
                    await trio.sleep(fail_after_(n))
                    self.note(name, "crash")
                    raise ValueError(f"{name} crashed")
                if return_after_(n) is not None:
                    await trio.sleep(return_after_(n))
                    self.note(name, "return")
                    return
                await trio.sleep_forever()
            finally:
                if teardown:
                    with teardown_scope(task_status):
                        await trio.sleep(teardown)
                self.note(name, "stopped")

        return ChildSpec(
            id=name,
            start=start,
            restart=restart,
            shutdown_timeout=shutdown_timeout,
            backoff=backoff,
        )

    def note(self, name: str, what: str) -> None:
        self.log.append((trio.current_time(), name, what))

    def times(self, name: str, what: str) -> list[float]:
        return [t for t, n, w in self.log if n == name and w == what]

    def drain(self) -> list[Any]:
        out = []
        while True:
            try:
                out.append(self.events.receive_nowait())
            except trio.WouldBlock:
                return out

    def story(self) -> list[tuple[Any, ...]]:
        """The event stream as compact tuples (type, time, path, detail)."""
        out: list[tuple[Any, ...]] = []
        for e in self.drain():
            match e:
                case ChildStarted():
                    out.append(("started", e.at, e.path, e.incarnation))
                case ChildFailed():
                    out.append(("failed", e.at, e.path, e.error))
                case ChildRestarting():
                    out.append(("restarting", e.at, e.path, e.delay))
                case ChildStopped():
                    out.append(("stopped", e.at, e.path, e.reason.value))
                case ChildHalted():
                    out.append(("halted", e.at, e.path))
                case SupervisorEscalated():
                    out.append(("escalated", e.at, e.supervisor, e.child))
                case _:
                    out.append((type(e).__name__,))
        return out


def spec(*children: ChildSpec, **kw: Any) -> SupervisorSpec:
    kw.setdefault("id", "root")
    kw.setdefault("backoff", Backoff.fixed(1.0))
    kw.setdefault("intensity", 10)
    kw.setdefault("period", 60.0)
    return SupervisorSpec(children=children, **kw)


async def run_for(sup: Supervisor, seconds: float) -> None:
    """Start `sup`, let it run `seconds` after it is ready, then stop it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(seconds)
        sup.stop()


def states(sup: Supervisor) -> dict[str, str]:
    return {c.id: c.state.value for c in sup.children()}


# -- start order and readiness ------------------------------------------------------------


async def test_children_start_in_order_each_after_the_previous_is_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lab = Lab()
    sup = Supervisor(spec(lab.child("a", ready_after=1), lab.child("b", ready_after=2)), events=lab.hub)
    async with trio.open_nursery() as nursery:
        assert await nursery.start(sup.run) is sup
        assert trio.current_time() == 3.0  # ready means every child is ready
        assert lab.times("b", "starting") == [1.0]  # b was not even started before a was ready
        assert states(sup) == {"a": "running", "b": "running"}
        sup.stop()
    assert lab.story() == [
        ("started", 1.0, "a", 1),
        ("started", 3.0, "b", 1),
        ("stopped", 3.0, "b", "shutdown"),
        ("stopped", 3.0, "a", "shutdown"),
    ]


async def test_failure_before_ready_counts_as_a_failure_and_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lab = Lab()
    children = (lab.child("a"), lab.child("b", fail_before_ready=lambda n: n == 1), lab.child("c"))
    sup = Supervisor(spec(*children, backoff=Backoff.fixed(2.0)), events=lab.hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert trio.current_time() == 2.0
        sup.stop()
    story = lab.story()
    assert story[:5] == [
        ("started", 0.0, "a", 1),
        ("failed", 0.0, "b", "RuntimeError: b cannot start"),
        ("restarting", 0.0, "b", 2.0),
        ("started", 2.0, "b", 2),
        ("started", 2.0, "c", 1),
    ]
    assert lab.times("c", "starting") == [2.0]


async def test_failure_before_ready_is_flagged_in_the_event(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    sup = Supervisor(spec(lab.child("a", fail_before_ready=lambda n: n == 1)), events=lab.hub)
    await run_for(sup, 0)
    flags = [e.before_ready for e in lab.drain() if isinstance(e, ChildFailed)]
    assert flags == [True]


async def test_escalation_during_initial_start_surfaces_from_nursery_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lab = Lab()
    sup = Supervisor(
        spec(lab.child("a"), lab.child("b", fail_before_ready=True), intensity=0), events=lab.hub
    )
    async with trio.open_nursery() as nursery:
        with pytest.raises(Escalation) as info:  # naked: readiness failed, the nursery is fine
            await nursery.start(sup.run)
    assert info.value.child == "b"
    assert isinstance(info.value.last_error, RuntimeError)
    assert lab.story() == [
        ("started", 0.0, "a", 1),
        ("failed", 0.0, "b", "RuntimeError: b cannot start"),
        ("stopped", 0.0, "a", "escalation"),
        ("escalated", 0.0, "", "b"),
    ]


async def test_a_temporary_child_failing_to_start_does_not_block_readiness(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lab = Lab()
    sup = Supervisor(
        spec(lab.child("a", restart=Restart.TEMPORARY, fail_before_ready=True), lab.child("b")),
        events=lab.hub,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert states(sup) == {"a": "failed", "b": "running"}
        sup.stop()


async def test_a_child_that_returns_before_started_counts_as_started_then_exited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[float] = []

    async def one_shot(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(1)
        ran.append(trio.current_time())

    lab = Lab()
    sup = Supervisor(
        spec(ChildSpec(id="reconcile", start=one_shot, restart=Restart.TRANSIENT), lab.child("b")),
        events=lab.hub,
    )
    await run_for(sup, 1)
    assert ran == [1.0]
    assert lab.story()[:3] == [
        ("started", 1.0, "reconcile", 1),
        ("stopped", 1.0, "reconcile", "exited"),
        ("started", 1.0, "b", 1),
    ]


# -- strategies ---------------------------------------------------------------------------


async def test_one_for_one_restarts_only_the_failed_child(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    children = (lab.child("a"), lab.child("b", fail_after=lambda n: 5 if n == 1 else None), lab.child("c"))
    sup = Supervisor(spec(*children, strategy=Strategy.ONE_FOR_ONE), events=lab.hub)
    await run_for(sup, 10)
    assert lab.story() == [
        ("started", 0.0, "a", 1),
        ("started", 0.0, "b", 1),
        ("started", 0.0, "c", 1),
        ("failed", 5.0, "b", "ValueError: b crashed"),
        ("restarting", 5.0, "b", 1.0),
        ("started", 6.0, "b", 2),
        ("stopped", 10.0, "c", "shutdown"),
        ("stopped", 10.0, "b", "shutdown"),
        ("stopped", 10.0, "a", "shutdown"),
    ]
    assert lab.incarnations == {"a": 1, "b": 2, "c": 1}


async def test_rest_for_one_restarts_the_failed_child_and_those_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lab = Lab()
    children = (
        lab.child("a"),
        lab.child("b", fail_after=lambda n: 5 if n == 1 else None),
        lab.child("c", ready_after=0.5),
        lab.child("d", ready_after=0.5),
    )
    sup = Supervisor(spec(*children, strategy=Strategy.REST_FOR_ONE), events=lab.hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert trio.current_time() == 1.0
        await trio.sleep(9)
        sup.stop()
    assert lab.story() == [
        ("started", 0.0, "a", 1),
        ("started", 0.0, "b", 1),
        ("started", 0.5, "c", 1),
        ("started", 1.0, "d", 1),
        ("failed", 5.0, "b", "ValueError: b crashed"),
        ("stopped", 5.0, "d", "restart"),  # later siblings stop in reverse order
        ("stopped", 5.0, "c", "restart"),
        ("restarting", 5.0, "b", 1.0),
        ("restarting", 5.0, "c", 1.0),
        ("restarting", 5.0, "d", 1.0),
        ("started", 6.0, "b", 2),  # and start again in order, each once the previous is ready
        ("started", 6.5, "c", 2),
        ("started", 7.0, "d", 2),
        ("stopped", 10.0, "d", "shutdown"),
        ("stopped", 10.0, "c", "shutdown"),
        ("stopped", 10.0, "b", "shutdown"),
        ("stopped", 10.0, "a", "shutdown"),
    ]
    assert lab.incarnations == {"a": 1, "b": 2, "c": 2, "d": 2}


async def test_one_for_all_restarts_every_child(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    children = (lab.child("a"), lab.child("b", fail_after=lambda n: 5 if n == 1 else None), lab.child("c"))
    sup = Supervisor(spec(*children, strategy=Strategy.ONE_FOR_ALL, backoff=Backoff.fixed(2)), events=lab.hub)
    await run_for(sup, 10)
    assert lab.story()[3:12] == [
        ("failed", 5.0, "b", "ValueError: b crashed"),
        ("stopped", 5.0, "c", "restart"),
        ("stopped", 5.0, "a", "restart"),
        ("restarting", 5.0, "a", 2.0),
        ("restarting", 5.0, "b", 2.0),
        ("restarting", 5.0, "c", 2.0),
        ("started", 7.0, "a", 2),
        ("started", 7.0, "b", 2),
        ("started", 7.0, "c", 2),
    ]
    assert lab.incarnations == {"a": 2, "b": 2, "c": 2}
    assert lab.times("a", "stopped")[0] == 5.0


async def test_group_restart_skips_stopped_and_temporary_siblings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lab = Lab()
    children = (
        lab.child("done", restart=Restart.TRANSIENT, return_after=1),
        lab.child("temp", restart=Restart.TEMPORARY),
        lab.child("b", fail_after=lambda n: 5 if n == 1 else None),
    )
    sup = Supervisor(spec(*children, strategy=Strategy.ONE_FOR_ALL), events=lab.hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(7)
        assert states(sup) == {"done": "stopped", "temp": "stopped", "b": "running"}
        sup.stop()
    assert lab.incarnations == {"done": 1, "temp": 1, "b": 2}


# -- backoff ----------------------------------------------------------------------------------


async def test_restart_delays_follow_capped_exponential_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lab = Lab()
    policy = Backoff(initial=1, factor=2, cap=5, jitter=0, reset_after=100)
    sup = Supervisor(
        spec(lab.child("flaky", fail_after=lambda n: 0 if n <= 5 else None), backoff=policy), events=lab.hub
    )
    await run_for(sup, 20)
    assert lab.times("flaky", "ready") == [0.0, 1.0, 3.0, 7.0, 12.0, 17.0]
    delays = [e.delay for e in lab.drain() if isinstance(e, ChildRestarting)]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_backoff_starts_again_after_a_healthy_run(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    policy = Backoff(initial=1, factor=2, cap=30, jitter=0, reset_after=10)
    fail_after = {1: 0, 2: 0, 3: 10, 4: 0}
    sup = Supervisor(spec(lab.child("a", fail_after=fail_after.get), backoff=policy), events=lab.hub)
    await run_for(sup, 20)
    # delays 1, 2, then the third run was healthy for 10 s: 1 again, then 2
    assert lab.times("a", "ready") == [0.0, 1.0, 3.0, 14.0, 16.0]


async def test_seeded_jitter_is_deterministic_and_within_bounds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = Backoff(initial=1, factor=2, cap=8, jitter=0.5, reset_after=1000)

    async def delays_with(seed: int) -> list[float]:
        lab = Lab()
        sup = Supervisor(
            spec(lab.child("a", fail_after=lambda n: 0 if n <= 6 else None), backoff=policy),
            events=lab.hub,
            rng=random.Random(seed),
        )
        await run_for(sup, 60)
        return [e.delay for e in lab.drain() if isinstance(e, ChildRestarting)]

    first, again, other = await delays_with(7), await delays_with(7), await delays_with(8)
    assert first == again
    assert first != other
    for delay, ceiling in zip(first, [1, 2, 4, 8, 8, 8], strict=True):
        assert ceiling * 0.5 <= delay <= ceiling
    assert any(delay < ceiling for delay, ceiling in zip(first, [1, 2, 4, 8, 8, 8], strict=True))


class _FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_policy_arithmetic() -> None:
    policy = Backoff(initial=0.5, factor=3, cap=10, jitter=0.4)
    rng = _FixedRandom(0.5)
    assert [policy.delay(n, rng) for n in range(4)] == pytest.approx([0.4, 1.2, 3.6, 8.0])
    assert policy.delay(10_000, rng) == pytest.approx(8.0)  # no overflow, still capped
    state = BackoffState(policy, _FixedRandom(0.0))
    assert [state.next_delay(), state.next_delay(), state.next_delay(healthy_for=59.9)] == [0.5, 1.5, 4.5]
    assert state.next_delay(healthy_for=60.0) == 0.5  # reset_after defaults to 60 s
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)
    with pytest.raises(ValueError):
        Backoff(factor=0.5)


# -- intensity ----------------------------------------------------------------------------------


async def test_too_many_restarts_within_the_period_escalate(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    sup = Supervisor(
        spec(lab.child("a"), lab.child("b", fail_after=1), intensity=2, period=10, backoff=Backoff.none()),
        events=lab.hub,
    )
    with pytest.raises(Escalation) as info:
        await sup.run()
    assert trio.current_time() == 3.0
    assert info.value.child == "b"
    assert isinstance(info.value.last_error, ValueError)
    story = lab.story()
    assert [s for s in story if s[0] == "failed"] == [
        ("failed", 1.0, "b", "ValueError: b crashed"),
        ("failed", 2.0, "b", "ValueError: b crashed"),
        ("failed", 3.0, "b", "ValueError: b crashed"),
    ]
    assert story[-2:] == [("stopped", 3.0, "a", "escalation"), ("escalated", 3.0, "", "b")]
    assert lab.times("a", "stopped") == [3.0]
    assert states(sup) == {"a": "stopped", "b": "failed"}
    assert sup.state.value == "escalated"


async def test_restarts_spread_over_time_do_not_escalate(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    sup = Supervisor(
        spec(lab.child("a", fail_after=6), intensity=2, period=10, backoff=Backoff.none()), events=lab.hub
    )
    await run_for(sup, 60)
    assert len(lab.times("a", "crash")) == 10
    assert sup.state.value == "stopped"


@pytest.mark.parametrize(("interval", "escalates"), [(10.0, True), (10.5, False)])
async def test_the_window_includes_a_restart_exactly_one_period_old(
    autojump_clock: trio.testing.MockClock, interval: float, escalates: bool
) -> None:
    # OTP keeps restarts with t >= now - period: two restarts exactly `period` apart are
    # both inside the window.
    lab = Lab()
    sup = Supervisor(
        spec(lab.child("a", fail_after=interval), intensity=1, period=10, backoff=Backoff.none()),
        events=lab.hub,
    )
    with trio.move_on_after(2 * interval + 1):
        if escalates:
            with pytest.raises(Escalation):
                await sup.run()
            assert trio.current_time() == 2 * interval
        else:
            await sup.run()
            raise AssertionError("run() returned without stop() or escalation")


def test_restart_window_slides() -> None:
    window = RestartWindow(intensity=2, period=5)
    assert window.add(0) and window.add(1)
    assert not window.add(2)  # three within 5 s
    assert window.count(6.5) == 1  # only t=2 is left
    assert window.add(7)


# -- restart types ---------------------------------------------------------------------------


async def test_restart_types(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    children = (
        lab.child("perm_returns", restart=Restart.PERMANENT, return_after=lambda n: 1 if n == 1 else None),
        lab.child("trans_returns", restart=Restart.TRANSIENT, return_after=1),
        lab.child("trans_crashes", restart=Restart.TRANSIENT, fail_after=lambda n: 1 if n == 1 else None),
        lab.child("temp_crashes", restart=Restart.TEMPORARY, fail_after=1),
        lab.child("temp_returns", restart=Restart.TEMPORARY, return_after=1),
    )
    sup = Supervisor(spec(*children), events=lab.hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(5)
        assert states(sup) == {
            "perm_returns": "running",  # returning is abnormal for a permanent child
            "trans_returns": "stopped",
            "trans_crashes": "running",
            "temp_crashes": "failed",
            "temp_returns": "stopped",
        }
        sup.stop()
    assert lab.incarnations == {
        "perm_returns": 2,
        "trans_returns": 1,
        "trans_crashes": 2,
        "temp_crashes": 1,
        "temp_returns": 1,
    }
    story = [s for s in lab.story() if s[1] == 1.0 and s[2] == "perm_returns"]
    assert story == [("stopped", 1.0, "perm_returns", "exited"), ("restarting", 1.0, "perm_returns", 1.0)]


# -- cancellation -------------------------------------------------------------------------------


async def test_cancellation_is_not_a_failure(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    sup = Supervisor(spec(lab.child("a"), lab.child("b"), lab.child("c")), events=lab.hub)
    with trio.move_on_after(5) as outer:
        await sup.run()
    assert outer.cancelled_caught
    assert lab.story()[3:] == [
        ("stopped", 5.0, "c", "shutdown"),
        ("stopped", 5.0, "b", "shutdown"),
        ("stopped", 5.0, "a", "shutdown"),
    ]
    assert all(c.failures == 0 and c.last_error is None for c in sup.children())


async def test_outer_cancellation_stops_children_one_by_one_in_reverse_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lab = Lab()
    sup = Supervisor(spec(*(lab.child(n, teardown=1.0) for n in "abc")), events=lab.hub)
    with trio.move_on_after(5):
        await sup.run()
    # Each child's teardown takes 1 s and the next one is only cancelled after that.
    assert [(t, n) for t, n, w in lab.log if w == "stopped"] == [(6.0, "c"), (7.0, "b"), (8.0, "a")]
    assert trio.current_time() == 8.0


async def test_teardown_scope_is_bounded_by_the_shutdown_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lab = Lab()
    sup = Supervisor(spec(lab.child("slow", teardown=100.0, shutdown_timeout=2.0)), events=lab.hub)
    await run_for(sup, 1)
    assert lab.times("slow", "stopped") == [3.0]


async def test_stop_aborts_a_start_in_progress(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    sup = Supervisor(spec(lab.child("a"), lab.child("never_ready", ready_after=1e9)), events=lab.hub)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        await trio.sleep(3)
        assert states(sup) == {"a": "running", "never_ready": "starting"}
        sup.stop()
    assert trio.current_time() == 3.0
    assert lab.times("a", "stopped") == [3.0]
    assert not any(isinstance(e, ChildFailed) for e in lab.drain())


async def test_an_error_raised_while_stopping_is_logged_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def messy(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            raise OSError("socket already gone")

    lab = Lab()
    sup = Supervisor(spec(ChildSpec(id="messy", start=messy)), events=lab.hub)
    await run_for(sup, 1)
    assert lab.story() == [("started", 0.0, "messy", 1), ("stopped", 1.0, "messy", "shutdown")]


# -- fault injection ----------------------------------------------------------------------------


async def test_kill_makes_a_child_fail_with_an_injected_fault(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    sup = Supervisor(spec(lab.child("a"), lab.child("b"), backoff=Backoff.fixed(3)), events=lab.hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(2)
        assert sup.kill("b") is True
        await trio.sleep(1)
        assert states(sup) == {"a": "running", "b": "backing_off"}
        info = {c.id: c for c in sup.children()}["b"]
        assert info.next_start_at == 5.0
        assert info.last_error == "InjectedFault: fault injected into b"
        assert sup.kill("b") is False  # nothing running to kill
        with pytest.raises(UnknownChild):
            sup.kill("nope")
        with pytest.raises(UnknownChild):
            sup.kill("a/deeper")  # a is not a supervisor
        await trio.sleep(3)
        assert sup.kill("a", ConnectionError("drill")) is True
        await trio.sleep(0.5)
        sup.stop()
    story = lab.story()
    assert story[2:6] == [
        ("failed", 2.0, "b", "InjectedFault: fault injected into b"),
        ("restarting", 2.0, "b", 3.0),
        ("started", 5.0, "b", 2),
        ("failed", 6.0, "a", "ConnectionError: drill"),
    ]
    info = {c.id: c for c in sup.children()}
    assert (info["a"].failures, info["b"].failures, info["b"].restarts) == (1, 1, 1)


async def test_kill_during_startup_fails_the_start(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    sup = Supervisor(spec(lab.child("slow", ready_after=lambda n: 10 if n == 1 else 0)), events=lab.hub)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        await trio.sleep(1)
        assert sup.kill("slow")
        await trio.sleep(5)
        sup.stop()
    failed = [e for e in lab.drain() if isinstance(e, ChildFailed)]
    assert [(e.at, e.before_ready, e.error) for e in failed] == [
        (1.0, True, "InjectedFault: fault injected into slow")
    ]
    assert lab.times("slow", "ready") == [2.0]


# -- nesting --------------------------------------------------------------------------------


def market(lab: Lab, name: str, **kw: Any) -> SupervisorSpec:
    children = (lab.child(f"{name}.feed"), lab.child(f"{name}.quoter"))
    kw.setdefault("backoff", Backoff.fixed(1))
    return SupervisorSpec(id=name, children=children, **kw)


async def test_kill_by_path_reaches_nested_children(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    root = Supervisor(
        spec(supervisor_child(market(lab, "BTC")), supervisor_child(market(lab, "ETH"))), events=lab.hub
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        nested = root.nested("BTC")
        assert nested is not None and nested.path == "BTC" and nested.name == "root/BTC"
        assert root.kill("BTC/BTC.quoter") is True
        await trio.sleep(2)
        assert lab.incarnations == {"BTC.feed": 1, "BTC.quoter": 2, "ETH.feed": 1, "ETH.quoter": 1}
        with pytest.raises(UnknownChild):
            root.kill("BTC/nope")
        assert root.kill("ETH") is True  # the whole market supervisor fails and restarts
        await trio.sleep(2)
        assert lab.incarnations == {"BTC.feed": 1, "BTC.quoter": 2, "ETH.feed": 2, "ETH.quoter": 2}
        stats = root.statistics()
        eth = {c.id: c for c in stats.children}["ETH"]
        assert (eth.state, eth.restarts, eth.incarnation) == (ChildState.RUNNING, 1, 2)
        assert eth.nested is not None
        assert [c.path for c in eth.nested.children] == ["ETH/ETH.feed", "ETH/ETH.quoter"]
        root.stop()
    story = lab.story()
    assert ("failed", 0.0, "BTC/BTC.quoter", "InjectedFault: fault injected into BTC/BTC.quoter") in story
    assert ("restarting", 0.0, "BTC/BTC.quoter", 1.0) in story
    assert ("failed", 2.0, "ETH", "InjectedFault: fault injected into ETH") in story
    # Stopping the ETH supervisor stopped its children in reverse order first.
    i = story.index(("failed", 2.0, "ETH", "InjectedFault: fault injected into ETH"))
    assert story[i - 2 : i] == [
        ("stopped", 2.0, "ETH/ETH.quoter", "shutdown"),
        ("stopped", 2.0, "ETH/ETH.feed", "shutdown"),
    ]
    # Shutdown order: last market first, and inside each market, last child first.
    assert story[-6:] == [
        ("stopped", 4.0, "ETH/ETH.quoter", "shutdown"),
        ("stopped", 4.0, "ETH/ETH.feed", "shutdown"),
        ("stopped", 4.0, "ETH", "shutdown"),
        ("stopped", 4.0, "BTC/BTC.quoter", "shutdown"),
        ("stopped", 4.0, "BTC/BTC.feed", "shutdown"),
        ("stopped", 4.0, "BTC", "shutdown"),
    ]


async def test_a_nested_escalation_can_halt_that_child_only(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    decisions: list[tuple[float, str]] = []

    async def on_escalation(escalation: Escalation) -> EscalationDecision:
        await trio.sleep(0.5)  # e.g. cancel the market's orders
        decisions.append((trio.current_time(), escalation.child))
        return EscalationDecision.HALT

    btc = SupervisorSpec(
        id="BTC",
        children=(lab.child("feed", fail_after=lambda n: 2 if n == 1 else None), lab.child("quoter")),
        intensity=0,
    )
    root = Supervisor(
        spec(supervisor_child(btc, on_escalation=on_escalation), supervisor_child(market(lab, "ETH"))),
        events=lab.hub,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await trio.sleep(5)
        assert decisions == [(2.5, "feed")]
        assert states(root) == {"BTC": "halted", "ETH": "running"}
        assert root.statistics().restarts_in_window == 0  # halting costs no intensity
        await root.restart_child("BTC")  # the root decides to bring the market back
        assert states(root) == {"BTC": "running", "ETH": "running"}
        assert lab.incarnations["feed"] == 2
        root.stop()
    story = lab.story()
    i = story.index(("failed", 2.0, "BTC/feed", "ValueError: feed crashed"))
    assert story[i : i + 5] == [
        ("failed", 2.0, "BTC/feed", "ValueError: feed crashed"),
        ("stopped", 2.0, "BTC/quoter", "escalation"),
        ("escalated", 2.0, "BTC", "feed"),
        (
            "failed",
            2.0,
            "BTC",
            "Escalation: supervisor root/BTC gave up after feed: ValueError: feed crashed",
        ),
        ("halted", 2.5, "BTC"),
    ]
    assert lab.incarnations["ETH.feed"] == 1


async def test_without_a_hook_a_nested_escalation_is_an_ordinary_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lab = Lab()
    btc = SupervisorSpec(
        id="BTC", children=(lab.child("feed", fail_after=lambda n: 2 if n == 1 else None),), intensity=0
    )
    root = Supervisor(spec(supervisor_child(btc)), events=lab.hub)
    await run_for(root, 5)
    assert lab.incarnations == {"feed": 2}
    assert ("restarting", 2.0, "BTC", 1.0) in lab.story()


async def test_a_failing_hook_escalates_the_parent(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()

    async def broken_hook(_escalation: Escalation) -> EscalationDecision:
        raise RuntimeError("cannot cancel orders")

    btc = SupervisorSpec(id="BTC", children=(lab.child("feed", fail_after=1),), intensity=0)
    root = Supervisor(spec(supervisor_child(btc, on_escalation=broken_hook)), events=lab.hub)
    with pytest.raises(Escalation) as info:
        await root.run()
    assert trio.current_time() == 1.0
    assert info.value.child == "BTC"
    assert isinstance(info.value.last_error, Escalation)
    assert info.value.last_error.child == "feed"
    assert lab.story()[-2:] == [
        (
            "failed",
            1.0,
            "BTC",
            "Escalation: supervisor root/BTC gave up after feed: ValueError: feed crashed",
        ),
        ("escalated", 1.0, "", "BTC"),
    ]


async def test_current_child_path_and_teardown_scope_inside_a_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[str | None, float]] = []

    async def probe(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with teardown_scope(task_status) as scope:
            seen.append((current_child_path(task_status), scope.deadline - trio.current_time()))
        task_status.started()
        await trio.sleep_forever()

    inner = SupervisorSpec(id="M", children=(ChildSpec(id="probe", start=probe, shutdown_timeout=7),))
    await run_for(Supervisor(spec(supervisor_child(inner))), 0)
    assert seen == [("M/probe", 7.0)]
    assert current_child_path(trio.TASK_STATUS_IGNORED) is None
    with teardown_scope() as scope:  # outside a child: the default budget
        assert scope.deadline - trio.current_time() == 5.0


# -- control, introspection and events ------------------------------------------------------


async def test_terminate_and_restart_child(autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    sup = Supervisor(spec(lab.child("a"), lab.child("b")), events=lab.hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.terminate_child("b")
        assert states(sup) == {"a": "running", "b": "stopped"}
        await trio.sleep(10)
        assert lab.incarnations["b"] == 1  # terminated children stay down
        with pytest.raises(RuntimeError, match="running, not stopped"):
            await sup.restart_child("a")
        await sup.restart_child("b")
        assert states(sup) == {"a": "running", "b": "running"}
        sup.stop()
    assert lab.story()[2:4] == [("stopped", 0.0, "b", "terminated"), ("started", 10.0, "b", 2)]
    with pytest.raises(RuntimeError, match="not running"):
        await sup.restart_child("b")


async def test_a_supervisor_runs_once_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    sup = Supervisor(spec(Lab().child("a")))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(RuntimeError, match="already running"):
            await sup.run()
        sup.stop()
    await run_for(sup, 1)  # and can run again afterwards, from fresh state
    assert sup.children()[0].incarnation == 1


async def test_event_hub_drops_the_oldest_for_a_slow_subscriber() -> None:
    hub = EventHub()
    slow = hub.subscribe(2)
    fast = hub.subscribe(100)
    for i in range(5):
        hub.publish(ChildStarted(at=float(i), supervisor="", child="a", incarnation=i))
    assert [slow.receive_nowait().at, slow.receive_nowait().at] == [3.0, 4.0]
    assert [fast.receive_nowait().at for _ in range(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert hub.statistics().dropped == 3
    await fast.aclose()
    hub.publish(ChildStarted(at=5.0, supervisor="", child="a", incarnation=5))
    assert hub.statistics().subscribers == 1
    assert slow.receive_nowait().at == 5.0
    with pytest.raises(ValueError):
        hub.subscribe(0)


def test_specs_are_validated() -> None:
    async def noop(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    with pytest.raises(ValueError, match="duplicate child id"):
        SupervisorSpec(id="s", children=[ChildSpec(id="a", start=noop), ChildSpec(id="a", start=noop)])
    with pytest.raises(ValueError, match="without '/'"):
        ChildSpec(id="a/b", start=noop)
    with pytest.raises(ValueError):
        SupervisorSpec(id="s", children=[], intensity=-1)
    with pytest.raises(ValueError):
        ChildSpec(id="a", start=noop, shutdown_timeout=0)


def test_injected_fault_names_its_path() -> None:
    fault = InjectedFault("BTC/quoter")
    assert fault.path == "BTC/quoter"
    assert str(fault) == "fault injected into BTC/quoter"


# -- chaos -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
async def test_random_kills_never_overlap_incarnations_or_lose_events(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    rng = random.Random(seed)
    alive: dict[str, int] = {}
    most_alive: dict[str, int] = {}

    def actor(path: str) -> Callable[..., Any]:
        async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            alive[path] = alive.get(path, 0) + 1
            most_alive[path] = max(most_alive.get(path, 0), alive[path])
            try:
                await trio.sleep(rng.choice([0, 0.1, 0.5]))
                task_status.started()
                await trio.sleep(rng.choice([0.3, 2.0, 1e9]))  # some crash by themselves
                raise ValueError(f"{path} crashed")
            finally:
                with teardown_scope(task_status):
                    await trio.sleep(rng.choice([0, 0.05]))
                alive[path] -= 1

        return start

    strategies = list(Strategy)
    markets = [
        SupervisorSpec(
            id=m,
            children=[ChildSpec(id=a, start=actor(f"{m}/{a}")) for a in ("feed", "book", "quoter")],
            strategy=rng.choice(strategies),
            intensity=1000,
            period=1.0,
            backoff=Backoff(initial=0.05, factor=2, cap=0.4, jitter=0.5),
        )
        for m in ("BTC", "ETH")
    ]
    lab = Lab()
    root = Supervisor(
        spec(
            *(supervisor_child(m) for m in markets),
            strategy=rng.choice(strategies),
            intensity=1000,
            period=1.0,
        ),
        events=lab.hub,
        rng=rng,
    )
    paths = ["BTC", "ETH"] + [f"{m}/{a}" for m in ("BTC", "ETH") for a in ("feed", "book", "quoter")]
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        for _ in range(60):
            await trio.sleep(rng.choice([0, 0.01, 0.2, 1.0]))
            root.kill(rng.choice(paths))
        root.stop()
    assert set(most_alive.values()) == {1}  # never two incarnations of one child at once
    assert set(alive.values()) == {0}  # everything ended
    open_runs: dict[str, int] = {}
    for event in lab.drain():
        if isinstance(event, ChildStarted):
            assert open_runs.get(event.path, 0) == 0, event
            open_runs[event.path] = 1
        elif isinstance(event, ChildFailed | ChildStopped) and open_runs.get(event.path):
            open_runs[event.path] = 0
    assert set(open_runs.values()) == {0}  # every start has its end in the stream
    assert root.state.value == "stopped"
