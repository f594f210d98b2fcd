"""Supervision for extmm: OTP-style supervisors on trio, restart backoff, supervision
events and the account-wide circuit breaker (its state machine: `extmm.domain.breaker`).

The per-market and root supervisors that wire the trading actors build on these.
"""

from __future__ import annotations

from extmm.domain.backoff import Backoff, BackoffState
from extmm.domain.breaker import (
    BreakerAction,
    BreakerClosed,
    BreakerEvent,
    BreakerHalfOpen,
    BreakerOpened,
    BreakerSettings,
    BreakerState,
    BreakerStatistics,
    CircuitBreaker,
    RequestHealth,
    Trip,
    TripReason,
)
from supervisors.events import (
    ChildFailed,
    ChildHalted,
    ChildRestarting,
    ChildStarted,
    ChildStopped,
    EventHub,
    EventHubStatistics,
    StopReason,
    SupervisionEvent,
    SupervisorEscalated,
    describe_error,
    join_path,
)
from supervisors.spec import ChildSpec, EscalationDecision, Restart, Strategy, SupervisorSpec
from supervisors.supervisor import (
    ChildInfo,
    ChildState,
    Escalation,
    InjectedFault,
    RestartWindow,
    Supervisor,
    SupervisorState,
    SupervisorStatistics,
    UnknownChild,
    current_child_path,
    supervisor_child,
    teardown_scope,
)

__all__ = [
    "Backoff",
    "BackoffState",
    "BreakerAction",
    "BreakerClosed",
    "BreakerEvent",
    "BreakerHalfOpen",
    "BreakerOpened",
    "BreakerSettings",
    "BreakerState",
    "BreakerStatistics",
    "ChildFailed",
    "ChildHalted",
    "ChildInfo",
    "ChildRestarting",
    "ChildSpec",
    "ChildStarted",
    "ChildState",
    "ChildStopped",
    "CircuitBreaker",
    "Escalation",
    "EscalationDecision",
    "EventHub",
    "EventHubStatistics",
    "InjectedFault",
    "RequestHealth",
    "Restart",
    "RestartWindow",
    "StopReason",
    "Strategy",
    "SupervisionEvent",
    "Supervisor",
    "SupervisorEscalated",
    "SupervisorSpec",
    "SupervisorState",
    "SupervisorStatistics",
    "Trip",
    "TripReason",
    "UnknownChild",
    "current_child_path",
    "describe_error",
    "join_path",
    "supervisor_child",
    "teardown_scope",
]
