"""The circuit breaker's I/O shell; the state machine is `extmm.domain.breaker`.

`settings_from_config` turns `BreakerConfig` into the pure core's plain parameters.
`BreakerShell.run` is the root's breaker child: it polls the breaker and executes its
action as soon as the breaker queues a transition (a trip, from any source), and checks
the account's drawdown and the time-driven transitions every second while CLOSED (the
Accounts publish their PnL once a second) and every 0.25 s otherwise (cooldown, the
HALF_OPEN size ramp) — on a trip stop quoting everywhere, cancel and confirm (shielded,
bounded) and shorten the dead man's switch to the backstop; on resume quote again
(HALF_OPEN ramps the size) with the normal countdown.
`feed_outcomes` is the request-outcomes child: every REST attempt's outcome, or the
port's counters (read once a second) when it has no per-request outcomes, into the breaker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from loguru import logger

from extmm.config import BreakerConfig
from extmm.domain.breaker import BreakerAction, BreakerSettings, BreakerState, CircuitBreaker, RequestHealth
from extmm.domain.trading import ResumeQuoting, SetCountdown, StopQuoting, Throttle
from extmm.venue.cancel import CancelOutcome
from extmm.venue.errors import VenueError
from extmm.venue.port import ExchangePort
from supervisors.events import EventHub
from supervisors.heartbeat import DeadMansSwitch
from supervisors.trading import TradingControl

POLL_S = 0.25  # while OPEN or HALF_OPEN (cooldown end, the size ramp)
CLOSED_POLL_S = 1.0  # while CLOSED: the drawdown (Accounts publish PnL once a second)
COUNTERS_POLL_S = 1.0  # a port without per-request outcomes: its counters
TRIP_CANCEL_S = 10.0


def settings_from_config(config: BreakerConfig, **overrides: Any) -> BreakerSettings:
    """`BreakerConfig` plus the knobs the config file does not have (yet)."""
    return BreakerSettings(
        max_429_per_min=config.max_429_per_min,
        max_error_rate=config.max_error_rate,
        max_latency_ms=config.max_latency_ms,
        window_s=config.window_s,
        cooldown_s=config.cooldown_s,
        dms_backstop_sec=config.dms_backstop_sec,
        escalations_to_trip=config.escalations_to_trip,
        **overrides,
    )


class BreakerShell:
    def __init__(
        self,
        breaker: CircuitBreaker,
        *,
        trading: TradingControl,
        switch: DeadMansSwitch,
        events: EventHub,
        cancel_ours: Callable[[float], Awaitable[CancelOutcome]],
        drawdown_usd: Callable[[], float],
        max_drawdown_usd: float | None,
        normal_countdown_s: int,
    ) -> None:
        self.breaker = breaker
        self._trading = trading
        self._switch = switch
        self._events = events
        self._cancel_ours = cancel_ours
        self._drawdown_usd = drawdown_usd
        self._max_drawdown_usd = max_drawdown_usd
        self._normal_countdown_s = normal_countdown_s
        self.trips = 0
        self._poked = trio.Event()
        breaker.on_event = self.poke

    def poke(self) -> None:
        """The breaker queued a transition: act on it now."""
        self._poked.set()

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            closed = self.breaker.state is BreakerState.CLOSED
            with trio.move_on_after(CLOSED_POLL_S if closed else POLL_S):
                await self._poked.wait()
            self._poked = trio.Event()
            now = trio.current_time()
            drawdown = self._drawdown_usd()
            if self._max_drawdown_usd is not None and drawdown >= self._max_drawdown_usd:
                self.breaker.record_drawdown(now, drawdown)
            await self.apply(self.breaker.poll(now))
            state = self.breaker.state_name
            self._trading.apply(Throttle(f"breaker {state}", self.breaker.quote_fraction(now)))

    async def apply(self, action: BreakerAction | None) -> None:
        if action is None:
            return
        for event in action.events:
            self._events.publish(event)
        if action.stop_quoting:
            self.trips += 1
            logger.error("circuit breaker OPEN: {}; stopping quotes and cancelling everything", action.reason)
            countdown = action.dms_countdown_s or self.breaker.settings.dms_backstop_sec
            self._trading.apply(StopQuoting(f"breaker: {action.reason}"), SetCountdown(countdown))
            with trio.CancelScope(shield=True):
                result = await self._cancel_ours(TRIP_CANCEL_S)
                try:
                    await self._switch.arm(countdown)
                except VenueError as exc:
                    logger.warning("shortening the DMS failed: {}", exc)
            if not result.confirmed_none:
                logger.error(
                    "{} of our orders still open after the breaker's cancel",
                    "UNKNOWN (venue did not confirm)" if result.left is None else result.left,
                )
        elif action.resume_quoting:
            logger.warning("circuit breaker {}: resuming quotes at {:.0%} size", action.state,
                           action.quote_fraction)
            self._trading.apply(
                SetCountdown(self._normal_countdown_s),
                ResumeQuoting(f"breaker {action.state}", action.quote_fraction),
            )


async def feed_outcomes(
    breaker: CircuitBreaker,
    outcomes: trio.MemoryReceiveChannel[Any] | None,
    port: ExchangePort,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The request-outcomes child (`extmm.venue.rest.RequestOutcome` records, or counters)."""
    task_status.started()
    if outcomes is not None:
        async for outcome in outcomes:
            breaker.record_request(outcome.at, outcome.outcome, outcome.latency_s)
        await trio.sleep_forever()  # the venue closed its side: nothing more will come
    # A port without per-request outcomes: feed the breaker from its counters.
    last = port.statistics()
    while True:
        await trio.sleep(COUNTERS_POLL_S)
        now = trio.current_time()
        stats = port.statistics()
        limited = stats.rate_limited - last.rate_limited
        failed = stats.server_errors - last.server_errors
        ok = max(stats.requests - last.requests - limited - failed, 0)
        for health, count in (
            (RequestHealth.RATE_LIMITED, limited), (RequestHealth.ERROR, failed), (RequestHealth.OK, ok)
        ):
            for _ in range(count):
                breaker.record_request(now, health)
        last = stats
