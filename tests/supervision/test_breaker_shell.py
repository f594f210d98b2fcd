"""The breaker's shell acts on a trip when it happens, not at its next poll (issue 15: it
no longer wakes four times a second for nothing), and still polls the drawdown and the
time-driven transitions."""

from __future__ import annotations

from typing import Any

import trio

from extmm.domain.breaker import BreakerSettings, BreakerState, CircuitBreaker, RequestHealth
from extmm.domain.trading import ResumeQuoting, StopQuoting
from extmm.venue.cancel import CancelOutcome
from supervisors.breaker import CLOSED_POLL_S, POLL_S, BreakerShell


class Fakes:
    def __init__(self) -> None:
        self.applied: list[tuple[float, Any]] = []
        self.armed: list[int] = []
        self.cancels: list[float] = []
        self.events: list[Any] = []
        self.drawdown = 0.0

    def apply(self, *commands: Any) -> None:
        self.applied += [(trio.current_time(), c) for c in commands]

    async def arm(self, countdown: int) -> None:
        self.armed.append(countdown)

    def publish(self, event: Any) -> None:
        self.events.append(event)

    async def cancel_ours(self, timeout_s: float) -> CancelOutcome:
        self.cancels.append(trio.current_time())
        return CancelOutcome(before=(), remaining=(), sends=0)

    def stops(self) -> list[float]:
        return [at for at, c in self.applied if isinstance(c, StopQuoting)]


def _shell(fakes: Fakes, breaker: CircuitBreaker, max_drawdown_usd: float | None = None) -> BreakerShell:
    return BreakerShell(
        breaker, trading=fakes, switch=fakes, events=fakes, cancel_ours=fakes.cancel_ours,  # type: ignore[arg-type]
        drawdown_usd=lambda: fakes.drawdown, max_drawdown_usd=max_drawdown_usd, normal_countdown_s=60,
    )


async def test_a_trip_is_acted_on_at_once_and_quoting_resumes_after_the_cooldown(autojump_clock) -> None:
    fakes = Fakes()
    breaker = CircuitBreaker(BreakerSettings(max_429_per_min=3, cooldown_s=5.0, probe_s=2.0))
    shell = _shell(fakes, breaker)
    async with trio.open_nursery() as nursery:
        await nursery.start(shell.run)
        await trio.sleep(3.3)
        assert not fakes.stops()
        tripped_at = trio.current_time()
        for _ in range(4):
            breaker.record_request(tripped_at, RequestHealth.RATE_LIMITED)
        await trio.testing.wait_all_tasks_blocked()
        # Stopped, cancelled and the switch shortened at the trip's instant, not a poll later.
        assert fakes.stops() == [tripped_at] and fakes.cancels == [tripped_at]
        assert fakes.armed == [breaker.settings.dms_backstop_sec] and shell.trips == 1
        # After the cooldown it half-opens within one open-state poll, and ramps up.
        await trio.sleep(5.0 + POLL_S + 0.01)
        resumes = [at for at, c in fakes.applied if isinstance(c, ResumeQuoting)]
        assert resumes and tripped_at + 5.0 <= resumes[0] <= tripped_at + 5.0 + POLL_S + 1e-9
        assert breaker.state is BreakerState.HALF_OPEN
        await trio.sleep(3.0)
        assert breaker.state is BreakerState.CLOSED
        nursery.cancel_scope.cancel()


async def test_a_drawdown_past_the_limit_trips_within_a_closed_poll(autojump_clock) -> None:
    fakes = Fakes()
    breaker = CircuitBreaker(BreakerSettings())
    shell = _shell(fakes, breaker, max_drawdown_usd=100.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(shell.run)
        await trio.sleep(2.5)
        fakes.drawdown = 150.0
        at = trio.current_time()
        await trio.sleep(CLOSED_POLL_S + 0.01)
        (stopped,) = fakes.stops()
        assert at < stopped <= at + CLOSED_POLL_S
        assert breaker.state is BreakerState.OPEN and breaker.latched
        nursery.cancel_scope.cancel()
