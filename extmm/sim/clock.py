"""`VirtualClock`: trio's `MockClock` autojump without the idle round trip through the run loop.

`MockClock(autojump_threshold=0)` moves virtual time when the run loop finds nothing to do,
but it takes two loop iterations per timer: in the first the loop sees no runnable task,
polls I/O with a zero timeout, expires nothing and then jumps the clock
(`MockClock._autojump`); only the second iteration expires the deadline and runs the task
(trio 0.35, `_core/_run.py::unrolled_run`). A backtest sleeps tens of thousands of times
(order and feed latency, the actors' timeouts, the supervisors' loops), so about a quarter
of its loop iterations did nothing but move the clock.

`VirtualClock` jumps in `deadline_to_sleep_time`, which the loop asks exactly when no task
is runnable, and answers 0: the same iteration then expires the deadline and runs its
tasks. The jump goes to the same instant the autojump would pick (the earliest deadline),
and tasks blocked in `wait_all_tasks_blocked` keep their priority (no jump while one
waits; the loop wakes them first, as under `MockClock`). The virtual time is the only
state: `current_time` does not read the real clock (`MockClock` at rate 0 reads it and
multiplies by 0). Backtests only: the live bot
runs on trio's real clock.

`idle_hook`: a replay driver's synchronous step (`ReplayDriver` sets it), called at the
same moment with the earliest deadline, before the clock jumps to it: it may move the
clock forward (not past the deadline) and wake tasks — it applies the recording's frames
up to the next one that wakes a task, so the replay itself costs no task switch. When it
woke someone the loop runs them now; otherwise the clock jumps to the deadline as before.
"""

from __future__ import annotations

from collections.abc import Callable
from math import inf

from trio._core._run import GLOBAL_RUN_CONTEXT
from trio.abc import Clock

_NEVER = 999_999_999.0  # what MockClock answers at rate 0: wait for I/O (or an idle waiter)


class VirtualClock(Clock):
    """Autojumping virtual time (see the module docstring); `jump` as `MockClock.jump`."""

    def __init__(self) -> None:
        self._now = 0.0
        self.idle_hook: Callable[[float], None] | None = None

    def __repr__(self) -> str:
        return f"<VirtualClock, time={self._now:.7f}>"

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        if deadline <= self._now:
            return 0.0
        runner = GLOBAL_RUN_CONTEXT.runner
        if runner.waiting_for_idle:
            return _NEVER
        if self.idle_hook is not None:
            self.idle_hook(deadline)
            if runner.runq:
                return 0.0
        if deadline == inf:
            return _NEVER
        self._now = deadline
        return 0.0

    def jump(self, seconds: float) -> None:
        """Advance virtual time by `seconds` now (≥ 0), as `MockClock.jump`."""
        if seconds < 0:
            raise ValueError("time can't go backwards")
        self._now += seconds

    def jump_to(self, when: float) -> None:
        """Advance virtual time to exactly `when` (no earlier than now)."""
        if when < self._now:
            raise ValueError("time can't go backwards")
        self._now = when
