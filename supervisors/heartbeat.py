"""The dead man's switch (SPEC §4.11): every call to the venue's countdown goes through here.

`DeadMansSwitch.arm` / `disarm` make the call and, only when the venue accepted it, record
it in the root's one `TradingState` (`TradingControl.apply`). `run` is the heartbeat, a
supervised child of the root's services: it re-arms the switch every third of the
countdown (every second after a failure), feeds the breaker with each result, and reports
ready only once the venue accepted the first arming — nothing quotes before the switch
is armed. `silence()` ends re-arming for good (shutdown, before the last word).
"""

from __future__ import annotations

from typing import Any

import trio
from loguru import logger

from extmm.domain.breaker import CircuitBreaker
from extmm.domain.trading import SwitchArmed, SwitchDisarmed
from extmm.venue.errors import VenueError
from extmm.venue.port import ExchangePort
from supervisors.trading import TradingControl

RETRY_AFTER_FAILURE_S = 1.0


class DeadMansSwitch:
    def __init__(self, port: ExchangePort, trading: TradingControl, breaker: CircuitBreaker) -> None:
        self._port = port
        self._trading = trading
        self._breaker = breaker
        self._silenced = False
        self.last_beat = 0.0  # trio time of the latest heartbeat attempt
        self.ever_armed = False

    async def arm(self, countdown_s: int) -> None:
        """Set the venue's countdown; VenueError when it did not accept it."""
        await self._port.set_dead_mans_switch(countdown_s)
        self.ever_armed = True
        self._trading.apply(SwitchArmed(at=trio.current_time(), countdown_s=countdown_s))

    async def disarm(self) -> None:
        await self._port.set_dead_mans_switch(0)
        self._trading.apply(SwitchDisarmed())

    def silence(self) -> None:
        """No heartbeat re-arms the switch after this (whatever runs or restarts)."""
        self._silenced = True

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """The heartbeat child. Before the switch was ever armed a refused call is a failed
        start (the supervisor retries under its policy); after that, failures are counted
        and fed to the breaker, and the heartbeat goes on."""
        failures = 0
        started = False
        while not self._silenced:
            countdown = self._trading.state.switch.countdown_s
            try:
                await self.arm(countdown)
                self._breaker.record_dms_success(trio.current_time())
                failures = 0
            except VenueError as exc:
                if not self.ever_armed:
                    raise
                failures += 1
                logger.warning("dead man's switch heartbeat failed ({} in a row): {}", failures, exc)
                self._breaker.record_dms_failure(trio.current_time())
            self.last_beat = trio.current_time()
            if not started:
                started = True
                task_status.started()
            await trio.sleep(max(countdown / 3.0, 0.5) if failures == 0 else RETRY_AFTER_FAILURE_S)
        if not started:
            task_status.started()
        await trio.sleep_forever()
