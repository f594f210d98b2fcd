"""The trio behaviours `supervisors` relies on, pinned down so a trio upgrade that changes
one of them fails here first (in the spirit of tractor's tests/unit/test_trioisms.py)."""

from __future__ import annotations

import contextvars

import pytest
import trio
import trio.lowlevel
import trio.testing

# -- nursery.start -----------------------------------------------------------------------


async def test_error_before_started_surfaces_from_start_not_from_the_nursery() -> None:
    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(1)
        raise ValueError("not ready")

    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError, match="not ready"):  # naked, not in a group
            await nursery.start(broken)
        # The nursery is intact: it still runs tasks and is not cancelled.
        assert not nursery.cancel_scope.cancel_called
        assert await nursery.start(_ready_with, 7) == 7
        nursery.cancel_scope.cancel()


async def _ready_with(value: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started(value)
    await trio.sleep_forever()


async def test_start_waits_for_started_and_returns_its_value(autojump_clock: trio.testing.MockClock) -> None:
    async def slow(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(2.5)
        task_status.started("ready")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        assert await nursery.start(slow) == "ready"
        assert trio.current_time() == 2.5
        nursery.cancel_scope.cancel()


async def test_returning_without_started_is_a_runtime_error() -> None:
    async def quits(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        return

    async with trio.open_nursery() as nursery:
        with pytest.raises(RuntimeError, match="without calling task_status.started"):
            await nursery.start(quits)


async def test_started_moves_the_task_into_the_target_nursery() -> None:
    seen: list[object] = []

    async def child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task = trio.lowlevel.current_task()
        seen.append(task.parent_nursery)
        task_status.started()
        seen.append(task.parent_nursery)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(child)
        assert seen[0] is not nursery  # start()'s temporary nursery
        assert seen[1] is nursery
        nursery.cancel_scope.cancel()


async def test_started_while_the_starter_is_cancelled_leaves_the_task_behind() -> None:
    # The supervisor shields a child only when it really moved: a shielded task left in
    # start()'s cancelled temporary nursery would hang it forever.
    moved: list[bool] = []

    async def child(
        target: trio.Nursery,
        starter: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        starter.cancel()
        task_status.started()
        moved.append(trio.lowlevel.current_task().parent_nursery is target)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as starter:
            await nursery.start(child, nursery, starter)
        assert starter.cancelled_caught
        assert moved == [False]
        nursery.cancel_scope.cancel()


# -- cancellation and shielding ----------------------------------------------------------


async def test_shielded_teardown_runs_to_completion_during_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    finished: list[float] = []

    async def child() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(3)  # would raise Cancelled at once without the shield
                finished.append(trio.current_time())

    with trio.move_on_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
    assert finished == [4.0]
    assert trio.current_time() == 4.0


async def test_a_shielded_scope_with_a_deadline_still_ends_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.move_on_after(1):
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 2) as teardown:
                await trio.sleep(100)
    assert teardown.cancelled_caught
    assert trio.current_time() == 3.0


async def test_a_shield_set_after_the_fact_protects_from_outer_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ended: list[float] = []
    inner = trio.CancelScope()

    async def child() -> None:
        with inner:
            await trio.sleep_forever()
        ended.append(trio.current_time())

    with trio.move_on_after(1) as outer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
            await trio.sleep(0.5)
            inner.shield = True
            with trio.CancelScope(shield=True):
                await trio.sleep(2)  # outer is cancelled at 1; the child keeps running
                assert ended == []
                inner.cancel()
    assert outer.cancel_called
    assert ended == [2.5]  # ended when its own scope was cancelled, 1.5 s after the outer one


async def test_move_on_after_accepts_shield() -> None:
    with trio.CancelScope() as outer:
        outer.cancel()
        with trio.move_on_after(5, shield=True):
            await trio.lowlevel.checkpoint()  # no Cancelled: the shield hides the outer cancellation
        with pytest.raises(trio.Cancelled):
            await trio.lowlevel.checkpoint()
            raise AssertionError("not reached")


async def test_a_cancel_scope_swallows_its_own_cancelled_also_inside_groups() -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(trio.sleep_forever)
            await trio.lowlevel.checkpoint()
            scope.cancel()
    assert scope.cancelled_caught


# -- exception groups --------------------------------------------------------------------


async def test_nurseries_raise_exception_groups_caught_with_except_star() -> None:
    async def crash(exc: Exception) -> None:
        raise exc

    caught: list[BaseException] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(crash, ValueError("one"))
    except* ValueError as group:
        caught.extend(group.exceptions)
    assert [str(e) for e in caught] == ["one"]


def test_except_star_wraps_naked_exceptions_and_bare_raise_keeps_the_group() -> None:
    # Why the supervisor unwraps single-leaf groups and never uses a bare `raise` in except*.
    with pytest.raises(ExceptionGroup) as info:
        try:
            raise ValueError("naked")
        except* ValueError as group:
            assert isinstance(group, ExceptionGroup)
            raise
    assert isinstance(info.value.exceptions[0], ValueError)


def test_except_star_lets_unmatched_parts_through() -> None:
    handled: list[BaseException] = []
    with pytest.raises(BaseExceptionGroup) as info:
        try:
            raise BaseExceptionGroup("mixed", [ValueError("v"), KeyboardInterrupt()])
        except* Exception as group:
            handled.extend(group.exceptions)
    assert [type(e) for e in handled] == [ValueError]
    assert [type(e) for e in info.value.exceptions] == [KeyboardInterrupt]


# -- memory channels -----------------------------------------------------------------------


async def test_receiver_ends_only_when_every_send_clone_is_closed() -> None:
    send, receive = trio.open_memory_channel[int](4)
    clone = send.clone()
    await send.aclose()
    await clone.send(1)
    assert receive.receive_nowait() == 1
    await clone.aclose()
    with pytest.raises(trio.EndOfChannel):
        receive.receive_nowait()


async def test_send_breaks_when_every_receive_clone_is_closed() -> None:
    send, receive = trio.open_memory_channel[int](4)
    other = receive.clone()
    assert send.statistics().open_receive_channels == 2
    await receive.aclose()
    send.send_nowait(1)  # one receiver left
    assert send.statistics().open_receive_channels == 1
    await other.aclose()
    with pytest.raises(trio.BrokenResourceError):
        send.send_nowait(2)


async def test_receive_clones_compete_and_a_full_buffer_would_block() -> None:
    send, receive = trio.open_memory_channel[int](2)
    other = receive.clone()
    send.send_nowait(1)
    send.send_nowait(2)
    with pytest.raises(trio.WouldBlock):
        send.send_nowait(3)
    # Any clone can take the oldest item: the EventHub drops the oldest this way.
    assert other.receive_nowait() == 1
    send.send_nowait(3)
    assert [receive.receive_nowait(), receive.receive_nowait()] == [2, 3]


async def test_closed_end_raises_closed_resource_error() -> None:
    send, receive = trio.open_memory_channel[int](1)
    send.close()
    with pytest.raises(trio.ClosedResourceError):
        send.send_nowait(1)
    receive.close()


# -- the clock and context -----------------------------------------------------------------


async def test_autojump_clock_makes_sleeps_exact_and_instant(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    await trio.sleep(3600)
    assert trio.current_time() - start == 3600
    with trio.move_on_after(0.25) as scope:
        await trio.sleep_forever()
    assert scope.cancelled_caught
    assert trio.current_time() - start == 3600.25


async def test_jumping_the_clock_wakes_a_sleeper_late(autojump_clock: trio.testing.MockClock) -> None:
    woke: list[float] = []

    async def sleeper() -> None:
        await trio.sleep_until(10)
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        await trio.sleep(4)
        autojump_clock.jump(9)  # like a blocked event loop: the sleeper wakes 3 s late
    assert woke == [13.0]


async def test_tasks_inherit_context_from_their_spawner_at_spawn_time() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    async def grandchild() -> None:
        seen.append(var.get())

    async def child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        var.set("child")  # visible to tasks it spawns, not to its parent
        async with trio.open_nursery() as inner:
            inner.start_soon(grandchild)
        task_status.started()

    async with trio.open_nursery() as nursery:
        await nursery.start(child)
    assert seen == ["child"]
    assert var.get() == "unset"


def test_settle_heap_freezes_what_start_up_left_alive():
    import gc

    from extmm.ops.gctune import settle_heap

    try:
        frozen = settle_heap()
        assert frozen > 1000 and gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
