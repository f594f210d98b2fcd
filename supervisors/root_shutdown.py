"""The root's way out (`RootShutdown`, a part of `supervisors.root.RootSupervisor`):
stop quoting, stop the markets, cancel ours and confirm, read positions, then the last
word on the dead man's switch — disarmed when the venue confirmed none of ours open,
else left armed with a short countdown as the backstop. When the heartbeat itself died
(it could not be restarted) the switch is left armed as it is: no call to it at all.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import trio
from loguru import logger

from extmm.domain.trading import StopQuoting
from extmm.journal.hooks import record_final_marks
from extmm.ops.telemetry import AccountStats, ExecStats
from extmm.venue.cancel import CancelOutcome
from extmm.venue.errors import VenueError
from extmm.venue.signing import is_ours
from supervisors.market import ACTORS
from supervisors.root_fields import RootFields
from supervisors.supervisor import Supervisor, SupervisorState

# Shutdown without the venue's confirmation that none of ours is open: the switch stays
# armed with this short countdown so the venue cancels whatever is left soon after we exit.
UNCONFIRMED_DMS_S = 10
# Worst case of shutdown(): listing ours (2 s), stopping the actors (20 s), cancel and
# confirm (15 s), positions and the final switch call (a few s). Deployment stop timeouts
# (systemd TimeoutStopSec, docker stop_grace_period) must be longer.
SHUTDOWN_BUDGET_S = 2 + 20 + 15 + 8


@attrs.frozen(kw_only=True)
class RunSummary:
    network: str
    markets: tuple[str, ...]
    orders_sent: int
    fills: int
    pnl: dict[str, Decimal]
    position: dict[str, Decimal]
    open_orders_at_exit: int | None  # None: the venue never confirmed (UNKNOWN)
    restarts: dict[str, dict[str, int]]
    breaker_trips: int
    dms: str = "disarmed"  # or e.g. "armed 10s, open orders unconfirmed"
    cancelled_at_exit: int | None = 0  # None: not confirmed by the venue
    stream_reconnects: dict[str, dict[str, int]] = attrs.Factory(dict)
    lifetime_pnl: Decimal | None = None  # net, all sessions of this network and account (journal)
    # restarts of the root's own loops (the services supervisor's children), by child id
    service_restarts: dict[str, int] = attrs.Factory(dict)

    @property
    def clean(self) -> bool:
        """Zero of ours open (venue-confirmed) and the switch disarmed."""
        return self.open_orders_at_exit == 0 and self.dms == "disarmed"

    def to_json(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "markets": list(self.markets),
            "orders_sent": self.orders_sent,
            "fills": self.fills,
            "pnl": {k: str(v) for k, v in self.pnl.items()},
            "position": {k: str(v) for k, v in self.position.items()},
            "open_orders_at_exit": "UNKNOWN" if self.open_orders_at_exit is None else self.open_orders_at_exit,
            "restarts": self.restarts,
            "service_restarts": self.service_restarts,
            "breaker_trips": self.breaker_trips,
            "dms": self.dms,
            "stream_reconnects": self.stream_reconnects,
        } | ({} if self.lifetime_pnl is None else {"lifetime_pnl": str(self.lifetime_pnl)})


class RootShutdown(RootFields):
    services: Supervisor | None
    _supervisor_done: trio.Event
    reconnect_counts: Callable[[], dict[str, dict[str, int]]]  # RootStatus's

    async def shutdown(self, *, heartbeat_failed: bool = False) -> RunSummary:
        """Stop quoting, stop the actors, cancel everything, confirm, disarm the DMS."""
        with trio.CancelScope(shield=True):
            logger.info("shutting down: cancelling all orders")
            self.trading.apply(StopQuoting("shutdown"))
            # Ours open as shutdown begins (the Executors cancel their own as they stop):
            # the "cancelled N" of the last log line.
            at_start: set[str] = set()
            with trio.move_on_after(2.0):
                try:
                    prefix = self.cfg.external_id_prefix
                    at_start = {o.external_id for o in await self.port.get_open_orders()
                                if o.external_id and is_ours(o.external_id, prefix)}
                except VenueError as exc:
                    logger.warning("listing open orders failed: {}", exc)
            if self.supervisor is not None and self.supervisor.state is not SupervisorState.IDLE:
                self.supervisor.stop()
                with trio.move_on_after(20):
                    await self._supervisor_done.wait()
            result = await self._cancel_ours(self.markets, timeout_s=15.0)
            self.exit_result = result
            cancelled: int | None = None
            if result.confirmed_none:
                cancelled = len(at_start | {o.external_id for o in result.seen})
            positions = await self._positions()
            dms = await self._last_word_on_the_switch(result, cancelled, heartbeat_failed=heartbeat_failed)
        return self.summary(result.left, positions, dms=dms, cancelled=cancelled)

    async def _positions(self) -> dict[str, Decimal]:
        positions: dict[str, Decimal] = {n: Decimal(0) for n in self.markets}
        try:
            for p in await self.port.get_positions():
                if p.market in positions:
                    positions[p.market] += p.signed_size
        except VenueError as exc:
            logger.warning("could not read positions at exit: {}", exc)
        return positions

    async def _last_word_on_the_switch(
        self, result: CancelOutcome, cancelled: int | None, *, heartbeat_failed: bool
    ) -> str:
        # The heartbeat must not re-arm the switch after our last word on it.
        self.switch.silence()
        if self.services is not None:
            try:
                await self.services.terminate_child("heartbeat")
            except RuntimeError:
                pass  # the services are not running (they gave up): nothing re-arms it
        countdown = self.trading.state.switch.countdown_s
        what = ("open orders unconfirmed" if result.left is None
                else f"{result.left} of ours still open")
        if heartbeat_failed and not self.trading.state.switch.armed:
            logger.error("the dead man's switch was never armed (the venue did not accept it)")
            return "not armed, heartbeat failed"
        if heartbeat_failed:
            state = "0 of ours open (confirmed)" if result.confirmed_none else what
            dms = f"armed {countdown}s, heartbeat failed"
            logger.error("{}; the heartbeat could not be restarted: the dead man's switch stays armed "
                         "(not disarmed) as the backstop", state)
            return dms
        if result.confirmed_none:
            try:
                await self.switch.disarm()
                logger.info(
                    "cancelled {}, 0 of ours open (confirmed), dead man's switch disarmed", cancelled
                )
                return "disarmed"
            except VenueError as exc:
                logger.error("cancelled {}, 0 of ours open (confirmed), but disarming the dead "
                             "man's switch failed: {}", cancelled, exc)
                return f"armed {countdown}s, disarm failed"
        try:
            await self.switch.arm(UNCONFIRMED_DMS_S)
            dms = f"armed {UNCONFIRMED_DMS_S}s, {what}"
        except VenueError as exc:
            logger.warning("shortening the DMS failed: {}", exc)
            dms = f"armed {countdown}s, {what}"
        logger.error("{}; the dead man's switch stays {} as the backstop", what, dms.split(",")[0])
        return dms

    def summary(
        self,
        open_left: int | None,
        positions: dict[str, Decimal],
        *,
        dms: str = "disarmed",
        cancelled: int | None = 0,
    ) -> RunSummary:
        pnl = {k: Decimal(0) for k in ("spread", "inventory", "fees", "funding", "net")}
        record_final_marks(self.journal, {n: getattr(self.view.get(n, AccountStats), "ledger", None)
                                          for n in self.markets})
        orders_sent = fills = 0
        for name in self.markets:
            acc = self.view.get(name, AccountStats)
            ex = self.view.get(name, ExecStats)
            if acc is not None:
                fills += acc.fills
                for k in pnl:
                    pnl[k] += acc.pnl.get(k, Decimal(0))
            if ex is not None:
                orders_sent += ex.orders_sent
        restarts = {
            name: {actor: self.restarts.get(f"{name}/{actor}", 0) for actor in ACTORS}
            for name in self.markets
        }
        return RunSummary(
            network=self.network,
            markets=tuple(self.markets),
            orders_sent=orders_sent,
            fills=fills,
            pnl=pnl,
            position=positions,
            open_orders_at_exit=open_left,
            restarts=restarts,
            service_restarts={
                child.id: self.restarts.get(child.id, 0)
                for child in (self.services.children() if self.services is not None else ())
            },
            breaker_trips=self.breaker_shell.trips,
            dms=dms,
            cancelled_at_exit=cancelled,
            stream_reconnects=self.reconnect_counts(),
            lifetime_pnl=self.journal.lifetime_net(pnl["net"]),
        )
