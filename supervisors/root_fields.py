"""The root's state that its parts share (`RootStartup`, `RootShutdown`, `RootStatus`):
declared once here, set by `supervisors.root.RootSupervisor.__init__`."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from extmm.config import BotConfig
from extmm.journal.actor import Journal
from extmm.ops.telemetry import TelemetryView
from extmm.venue.cancel import CancelOutcome, cancel_ours
from extmm.venue.port import ExchangePort
from extmm.venue.types import MarketInfo, OrderInfo
from supervisors.breaker import BreakerShell
from supervisors.heartbeat import DeadMansSwitch
from supervisors.supervisor import Supervisor
from supervisors.trading import TradingControl


class RootFields:
    cfg: BotConfig
    port: ExchangePort
    network: str
    journal: Journal
    view: TelemetryView
    markets: dict[str, MarketInfo]
    trading: TradingControl
    switch: DeadMansSwitch
    supervisor: Supervisor | None
    exit_result: CancelOutcome | None
    restarts: Any  # Counter[str]
    breaker_shell: BreakerShell

    async def _cancel_ours(
        self, markets: Collection[str], *, timeout_s: float, listed: Sequence[OrderInfo] | None = None
    ) -> CancelOutcome:
        """Cancel and confirm our orders in `markets` (startup, halt, breaker, shutdown)."""
        return await cancel_ours(
            self.port, prefix=self.cfg.external_id_prefix, markets=list(markets), timeout_s=timeout_s,
            listed=listed,
        )
