"""Faster replay (issue 15): the backtest's `VirtualClock`, the replay's timed delivery, its L2 book.

`VirtualClock` must move time exactly as `MockClock(autojump_threshold=0)` does (same
instants, same tasks woken together, `wait_all_tasks_blocked` first); the replay driver
holds frames until they are due and must deliver each at exactly its delivery time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from loguru import logger

from extmm.research.record import record_synthetic
from extmm.sim.clock import VirtualClock
from extmm.sim.recording import read_recording
from extmm.sim.replay import replay_venue


async def _schedule() -> list[tuple[str, float]]:
    """Sleepers, a timeout, an event, and an idle watcher; what woke when."""
    seen: list[tuple[str, float]] = []
    gate = trio.Event()

    async def sleeper(name: str, steps: list[float]) -> None:
        for step in steps:
            await trio.sleep(step)
            seen.append((name, trio.current_time()))

    async def waiter() -> None:
        with trio.move_on_after(0.35):
            await gate.wait()
        seen.append(("timeout", trio.current_time()))
        await gate.wait()
        seen.append(("gate", trio.current_time()))

    async def opener() -> None:
        await trio.sleep(0.7)
        gate.set()

    async def idle_watcher() -> None:
        for _ in range(3):
            await trio.testing.wait_all_tasks_blocked()
            seen.append(("idle", trio.current_time()))
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper, "a", [0.1, 0.1, 0.3])
        nursery.start_soon(sleeper, "b", [0.2, 0.25, 0.0])
        nursery.start_soon(waiter)
        nursery.start_soon(opener)
        nursery.start_soon(idle_watcher)
    return sorted(seen)


def test_virtual_clock_moves_time_as_mock_clock_autojump():
    expected = trio.run(_schedule, clock=trio.testing.MockClock(autojump_threshold=0))
    got = trio.run(_schedule, clock=VirtualClock())
    assert got == expected
    assert ("gate", pytest.approx(0.7)) in got and ("idle", 0.0) in got  # idle before any jump


def test_virtual_clock_does_not_jump_past_an_idle_waiter_and_jumps_exactly():
    clock = VirtualClock()

    async def main() -> tuple[float, float, float]:
        await trio.testing.wait_all_tasks_blocked()
        idle_at = trio.current_time()
        await trio.sleep(12.5)
        slept_to = trio.current_time()
        clock.jump_to(100.0)
        return idle_at, slept_to, trio.current_time()

    assert trio.run(main, clock=clock) == (0.0, 12.5, 100.0)
    with pytest.raises(ValueError):
        clock.jump_to(99.0)
    with pytest.raises(ValueError):
        clock.jump(-1.0)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vclock") / "rec.ndjson.gz"
    record_synthetic(path, markets=["BTC-USD"], seconds=20, seed=3, kinds=["orderbook", "trades", "mark"])
    return path


class _DriverSteps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("ReplayDriver.run"):
            self.steps += 1


@pytest.mark.parametrize("interval_ms", [0, 100])
def test_replay_delivers_each_frame_exactly_at_its_delivery_time(recording, interval_ms):
    logger.disable("")
    start_ms = next(r["t"] for r in read_recording([recording]) if r.get("k") != "header")
    driver = _DriverSteps()

    async def main() -> list[tuple[float, int]]:
        arrivals: list[tuple[float, int]] = []
        async with replay_venue([recording], markets=["BTC-USD"], feed_latency_s=0.05,
                                book_interval_ms=interval_ms) as replay:
            t0 = trio.current_time()
            async with replay.venue.orderbook_stream("BTC-USD") as stream:

                async def read() -> None:
                    while True:
                        msg = await stream.receive()
                        arrivals.append((trio.current_time() - t0, msg.ts))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    await replay.finished.wait()
                    await trio.sleep(0.2)
                    nursery.cancel_scope.cancel()
        return arrivals

    try:
        arrivals = trio.run(main, clock=VirtualClock(), instruments=[driver])
        # The same walk as a task that sleeps to each frame (any other clock) agrees.
        assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == arrivals
    finally:
        logger.enable("")
    # Under the VirtualClock the walk runs in the clock's idle hook: the driver's task
    # only starts, waits for the end of the data and delivers the last frames.
    assert driver.steps < 10 < len(arrivals)
    deltas = arrivals[1:]  # the first is the snapshot sent on subscribing
    assert len(deltas) > 100
    for at, ts in deltas:
        due_ms = ts - start_ms + 50  # exchange time + feed latency
        if interval_ms:  # a merged window goes out when it closes (it carries its last frame's ts)
            due_ms = (due_ms // interval_ms + 1) * interval_ms
        assert at * 1000 == pytest.approx(due_ms, abs=1e-6)
    assert [at for at, _ in arrivals] == sorted(at for at, _ in arrivals)


def test_recorded_book_keeps_its_best_levels_through_random_deltas():
    """The replay's L2 book finds the next best level next to a removed best (or by a scan)."""
    import random
    from decimal import Decimal

    from extmm.domain.l2 import L2Book
    from extmm.domain.units import MarketSpec

    spec = MarketSpec(name="X-USD", tick_size=Decimal("1"), lot_size=Decimal("0.001"), min_order_size=Decimal("0.001"))
    book = L2Book(spec)
    book.apply("SNAPSHOT", {"b": [{"p": "1000", "q": "1"}], "a": [{"p": "1001", "q": "1"}]})
    rng = random.Random(5)
    for _ in range(5000):
        side = rng.choice("ba")
        # mostly near the touch, sometimes far away (gaps wider than the tick-by-tick look)
        offset = rng.randrange(0, 8) if rng.random() < 0.9 else rng.randrange(50, 400)
        price = 1000 - offset if side == "b" else 1001 + offset
        size = "0" if rng.random() < 0.45 else str(Decimal(rng.randrange(1, 50)) / 1000)
        book.apply("DELTA", {"b": [], "a": [], side: [{"p": str(price), "c": size}]})
        assert book.best_bid == (max(book.bids) if book.bids else None)
        assert book.best_ask == (min(book.asks) if book.asks else None)


def test_a_failure_inside_the_idle_walk_surfaces_in_the_driver_task(recording, monkeypatch):
    """An error while applying a frame in the clock's idle hook must not break trio's run
    loop (TrioInternalError): it is raised by the driver's task, like any task's error."""
    from extmm.sim.replay_driver import ReplayDriver

    applied = 0
    original = ReplayDriver._apply_due

    def failing(self, due, *rest):
        nonlocal applied
        applied += 1
        if applied == 50:
            raise RuntimeError("boom in frame 50")
        original(self, due, *rest)

    monkeypatch.setattr(ReplayDriver, "_apply_due", failing)
    logger.disable("")

    async def main() -> None:
        async with replay_venue([recording], markets=["BTC-USD"], feed_latency_s=0.05) as replay:
            await replay.finished.wait()

    try:
        with pytest.raises(BaseException) as info:
            trio.run(main, clock=VirtualClock())
    finally:
        logger.enable("")

    def leaves(exc: BaseException) -> list[BaseException]:
        if isinstance(exc, BaseExceptionGroup):
            return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
        return [exc]

    assert [type(e) for e in leaves(info.value)] == [RuntimeError]
    assert str(leaves(info.value)[0]) == "boom in frame 50" and applied == 50
