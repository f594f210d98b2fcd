"""What a supervisor does when a child ends (`ChildLifecycle`, a part of
`supervisors.supervisor.Supervisor`): the restart type, the escalation hook, the strategy
and the restart intensity; stopping one child (bounded by its `shutdown_timeout`) and all
of them in reverse start order. Runs only in the supervisor's own loop task.
"""

from __future__ import annotations

import trio
from loguru import logger

from extmm.domain.restarts import RestartWindow
from supervisors.child import ChildState, Escalation, InjectedFault, Slot
from supervisors.events import (
    ChildFailed,
    ChildHalted,
    ChildRestarting,
    ChildStopped,
    EventHub,
    StopReason,
    SupervisionEvent,
    describe_error,
)
from supervisors.spec import EscalationDecision, Restart, Strategy, SupervisorSpec


class ChildLifecycle:
    spec: SupervisorSpec
    path: str
    name: str
    _hub: EventHub | None
    _slots: list[Slot]
    _window: RestartWindow

    async def _on_end(
        self, slot: Slot, error: BaseException | None, *, before_ready: bool
    ) -> Escalation | None:
        """Apply the restart type, the escalation hook and the strategy to an ended child."""
        now = trio.current_time()
        healthy_for = 0.0 if before_ready or slot.started_at is None else now - slot.started_at
        slot.scope = None
        child_name = self._name_of(slot)
        if error is None:
            slot.state = ChildState.STOPPED
            self._publish(
                ChildStopped(at=now, supervisor=self.path, child=slot.spec.id, reason=StopReason.EXITED)
            )
            if slot.spec.restart is not Restart.PERMANENT:
                logger.info("{} exited", child_name)
                return None
            logger.warning("{} is permanent but returned; restarting it", child_name)
        else:
            self._record_failure(slot, error, before_ready=before_ready, at=now)
            if slot.spec.restart is Restart.TEMPORARY:
                return None
            if isinstance(error, Escalation) and slot.spec.on_escalation is not None:
                decision = await self._ask_escalation_hook(slot, error)
                if decision is EscalationDecision.HALT:
                    slot.state = ChildState.HALTED
                    logger.error("{} halted after escalating", child_name)
                    self._publish(
                        ChildHalted(
                            at=trio.current_time(),
                            supervisor=self.path,
                            child=slot.spec.id,
                            error=describe_error(error),
                        )
                    )
                    return None
                if decision is EscalationDecision.ESCALATE:
                    return Escalation(self.name, slot.spec.id, error)
        return await self._restart(slot, error, healthy_for=healthy_for)

    def _record_failure(self, slot: Slot, error: BaseException, *, before_ready: bool, at: float) -> None:
        slot.failures += 1
        slot.last_error = error
        slot.state = ChildState.FAILED
        when = "while starting" if before_ready else "while running"
        logger.opt(exception=error).warning(
            "{} failed {}: {}", self._name_of(slot), when, describe_error(error)
        )
        self._publish(
            ChildFailed(
                at=at,
                supervisor=self.path,
                child=slot.spec.id,
                error=describe_error(error),
                before_ready=before_ready,
            )
        )

    async def _ask_escalation_hook(self, slot: Slot, error: Escalation) -> EscalationDecision:
        hook = slot.spec.on_escalation
        assert hook is not None
        decision: object = EscalationDecision.ESCALATE  # whatever the hook returns is checked below
        with trio.move_on_after(slot.spec.shutdown_timeout, shield=True) as scope:
            try:
                decision = await hook(error)
            except Exception as exc:
                logger.opt(exception=exc).error("on_escalation hook of {} failed", self._name_of(slot))
                decision = EscalationDecision.ESCALATE
        if scope.cancelled_caught:
            logger.error(
                "on_escalation hook of {} overran {}s", self._name_of(slot), slot.spec.shutdown_timeout
            )
            decision = EscalationDecision.ESCALATE
        if not isinstance(decision, EscalationDecision):
            logger.error("on_escalation hook of {} returned {!r}", self._name_of(slot), decision)
            decision = EscalationDecision.ESCALATE
        return decision

    async def _restart(
        self, slot: Slot, cause: BaseException | None, *, healthy_for: float
    ) -> Escalation | None:
        if not self._window.add(trio.current_time()):
            return Escalation(self.name, slot.spec.id, cause)
        assert slot.backoff is not None
        delay = slot.backoff.next_delay(healthy_for=healthy_for)
        group = self._restart_group(slot)
        for sibling in reversed(group):
            if sibling is not slot:
                await self._stop_slot(sibling, StopReason.RESTART)
        due = trio.current_time() + delay
        for member in group:
            if member is not slot and member.spec.restart is Restart.TEMPORARY:
                continue  # OTP: temporary children are never restarted, not even with a group
            member.restarts += 1
            member.due = due
            member.state = ChildState.BACKING_OFF
            self._publish(
                ChildRestarting(
                    at=trio.current_time(),
                    supervisor=self.path,
                    child=member.spec.id,
                    delay=delay,
                    restarts=member.restarts,
                )
            )
        logger.info(
            "restarting {} of {} in {:.3f}s ({})",
            ", ".join(m.spec.id for m in group),
            self.name,
            delay,
            self.spec.strategy.value,
        )
        return None

    def _restart_group(self, slot: Slot) -> list[Slot]:
        match self.spec.strategy:
            case Strategy.ONE_FOR_ONE:
                return [slot]
            case Strategy.REST_FOR_ONE:
                candidates = self._slots[self._slots.index(slot) :]
            case Strategy.ONE_FOR_ALL:
                candidates = self._slots
        return [s for s in candidates if s is slot or s.active]

    async def _stop_slot(self, slot: Slot, reason: StopReason) -> None:
        """Cancel one incarnation and wait for its end; report how it really ended."""
        at = trio.current_time()
        if slot.scope is None:
            was_scheduled = slot.due is not None
            slot.due = None
            if slot.state in (ChildState.BACKING_OFF, ChildState.PENDING):
                slot.state = ChildState.STOPPED
                if was_scheduled and slot.generation > 0:
                    self._publish(
                        ChildStopped(at=at, supervisor=self.path, child=slot.spec.id, reason=reason)
                    )
            return
        slot.stopping = True
        slot.state = ChildState.STOPPING
        slot.scope.cancel()
        with trio.move_on_after(slot.spec.shutdown_timeout):
            await slot.done.wait()
        if not slot.done.is_set():
            logger.error(
                "{} still running {}s after cancellation; waiting (trio cannot abandon a task, and "
                "two incarnations at once would be worse)",
                self._name_of(slot),
                slot.spec.shutdown_timeout,
            )
            await slot.done.wait()
        slot.scope = None
        exit_, slot.exit = slot.exit, None
        slot.state = ChildState.STOPPED
        at = trio.current_time()
        if exit_ is not None and not exit_.while_stopping:
            # It had ended by itself before we got to it: report that, not our stop.
            if exit_.error is not None:
                self._record_failure(slot, exit_.error, before_ready=False, at=at)
            else:
                self._publish(
                    ChildStopped(at=at, supervisor=self.path, child=slot.spec.id, reason=StopReason.EXITED)
                )
            return
        if exit_ is not None and exit_.error is not None and not isinstance(exit_.error, InjectedFault):
            logger.warning("{} raised while stopping: {}", self._name_of(slot), describe_error(exit_.error))
        logger.info("{} stopped ({})", self._name_of(slot), reason.value)
        self._publish(ChildStopped(at=at, supervisor=self.path, child=slot.spec.id, reason=reason))

    async def _stop_all(self, reason: StopReason) -> None:
        for slot in reversed(self._slots):
            try:
                await self._stop_slot(slot, reason)
            except Exception as exc:  # never leave the rest running because of one
                logger.opt(exception=exc).error("stopping {} failed", self._name_of(slot))

    # -- requests from other tasks ------------------------------------------------------

    def _name_of(self, slot: Slot) -> str:
        return f"{self.name}/{slot.spec.id}"

    def _publish(self, event: SupervisionEvent) -> None:
        if self._hub is not None:
            self._hub.publish(event)
