"""The root's own loops as supervised children (the "services" supervisor).

Journal, supervision events, the dead man's switch heartbeat, request
outcomes, the circuit breaker, the shared account stream and (when `alerts.webhook_url`
is set) the alert webhook run under the same
`Supervisor` the markets use, in that start order, ONE_FOR_ONE with declared restart
policies (`extmm.domain.backoff.Backoff`): a crash restarts the one child while the
markets keep quoting. When the restarts exceed `SERVICES_INTENSITY` within
`SERVICES_PERIOD_S` the services supervisor gives up (`Escalation`) and the root stops
the bot through cancel and confirm (`RootSupervisor.run`); if it was the heartbeat, the
switch is left armed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import trio

from extmm.config import AlertsConfig
from extmm.domain.backoff import Backoff
from extmm.domain.breaker import CircuitBreaker
from extmm.journal.actor import Journal
from extmm.journal.hooks import event_row
from extmm.ops.alerts import watch_alerts
from extmm.ops.status import AppStatus
from extmm.venue.port import ExchangePort
from extmm.venue.shared_account import SharedAccountStream
from supervisors.breaker import BreakerShell, feed_outcomes
from supervisors.events import ChildRestarting, SupervisionEvent
from supervisors.heartbeat import DeadMansSwitch
from supervisors.spec import ChildSpec, Restart, Strategy, SupervisorSpec

SERVICES_ID = "services"
HEARTBEAT = "heartbeat"
ALERTS = "alerts"
SERVICES_INTENSITY = 5  # restarts of the root's own loops ...
SERVICES_PERIOD_S = 60.0  # ... within this many seconds before the bot stops
SERVICE_BACKOFF = Backoff(initial=0.5, factor=2.0, cap=5.0, jitter=0.2, reset_after=60.0)


def heartbeat_backoff(countdown_s: int) -> Backoff:
    """Restart the heartbeat well before its next beat would have been due."""
    cap = max(countdown_s / 3.0, 0.5)
    return Backoff(initial=min(0.5, cap), factor=2.0, cap=cap, jitter=0.2, reset_after=60.0)


async def record_events(
    events: trio.MemoryReceiveChannel[SupervisionEvent],
    journal: Journal,
    restarts: Counter[str],
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The events child: supervision events into the journal and the restart counts.
    The subscription belongs to the root (it outlives a restart of this child)."""
    task_status.started()
    async for event in events:
        journal.record(event_row(journal, event))
        if isinstance(event, ChildRestarting):
            restarts[event.path] += 1
    await trio.sleep_forever()


async def send_alerts(
    status: Callable[[], AppStatus | None],
    cfg: AlertsConfig,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The alerts child: status snapshots into webhook alerts (`extmm.ops.alerts`). It holds
    no state worth keeping: a new incarnation starts with a fresh detector (conditions that
    still hold fire again) and an empty send queue."""
    task_status.started()
    await watch_alerts(status, cfg)


def services_spec(
    *,
    journal: Journal,
    events: trio.MemoryReceiveChannel[SupervisionEvent],
    restarts: Counter[str],
    switch: DeadMansSwitch,
    countdown_s: int,
    breaker: CircuitBreaker,
    breaker_shell: BreakerShell,
    outcomes: trio.MemoryReceiveChannel[Any] | None,
    port: ExchangePort,
    account_hub: SharedAccountStream,
    alerts: AlertsConfig | None = None,
    status: Callable[[], AppStatus | None] = lambda: None,
) -> SupervisorSpec:
    """The services supervisor's spec; `alerts` (with its webhook set) adds the alerts child,
    which reads `status` (None: nothing to judge yet)."""

    async def run_events(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await record_events(events, journal, restarts, task_status=task_status)

    async def run_outcomes(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await feed_outcomes(breaker, outcomes, port, task_status=task_status)

    children = [
        # First: the root stops the others before closing it, so it takes their last events.
        # Transient: it returns when the root closes it (or when disabled). Its final
        # flush is bounded by 5 s (extmm.journal.actor).
        ChildSpec(id="journal", start=journal.run, restart=Restart.TRANSIENT, shutdown_timeout=6.0),
        ChildSpec(id="events", start=run_events),
        ChildSpec(id=HEARTBEAT, start=switch.run, backoff=heartbeat_backoff(countdown_s)),
        ChildSpec(id="outcomes", start=run_outcomes),
        # Its trip cancels under a shield for up to 10 s.
        ChildSpec(id="breaker", start=breaker_shell.run, shutdown_timeout=15.0),
        ChildSpec(id="account", start=account_hub.run),
    ]
    if alerts is not None and alerts.webhook_url is not None:

        async def run_alerts(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            await send_alerts(status, alerts, task_status=task_status)

        # Last: it only reads the status. Permanent under the services' policy: never on the
        # trading path, but an unattended bot should not run on without its alerts.
        children.append(ChildSpec(id=ALERTS, start=run_alerts))
    return SupervisorSpec(
        id=SERVICES_ID,
        children=children,
        strategy=Strategy.ONE_FOR_ONE,
        intensity=SERVICES_INTENSITY,
        period=SERVICES_PERIOD_S,
        backoff=SERVICE_BACKOFF,
    )

