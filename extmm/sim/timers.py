"""Everything that happens at a time rather than on a request: order expiry, the dead
man's switch (SPEC §4.11) and hourly funding.

`Timers.run(until_ms)` fires them in time order (ties: expiry, then the switch, then
funding), moving the world's clock to each one as it fires, so the same calls at the
same times give the same results in real or virtual time.
"""

from __future__ import annotations

import heapq
from fractions import Fraction

from extmm.sim.account import funding_amount, to_decimal
from extmm.sim.matching import Matcher
from extmm.sim.model import (
    CANCELLED,
    EXPIRED,
    FundingPaymentRecord,
    FundingRateEvent,
    FundingRatePoint,
    PositionEvent,
    SimReject,
)
from extmm.sim.world import World

_UNKNOWN = object()


class Timers:
    """Expiry, the dead man's switch and funding over a `World`; see the module docstring."""

    def __init__(self, world: World, matcher: Matcher) -> None:
        self.world = world
        self.matcher = matcher
        # The earliest armed switch (None: none), or _UNKNOWN: to be looked up. Switches are
        # armed only here (`set_switch`, `fire_switch`), which forget it; a value earlier
        # than the real one only costs a look-up, so disarming needs no care.
        self._next_switch_ms: int | None | object = _UNKNOWN

    def run(self, until_ms: int) -> None:
        """Fire everything due at or before `until_ms`, in time order."""
        world = self.world
        switch = self._next_switch_ms
        if (
            world.next_funding_ms > until_ms
            and (switch is None or (switch is not _UNKNOWN and switch > until_ms))  # type: ignore[operator]
            and (not world.expiries or world.expiries[0][0] > until_ms)
        ):
            return  # nothing due (the common case: a replay calls this per recorded frame)
        self._fire_until(until_ms)
        armed = [a.dms_deadline_ms for a in world.accounts.values() if a.dms_deadline_ms is not None]
        self._next_switch_ms = min(armed) if armed else None

    def _fire_until(self, until_ms: int) -> None:
        world = self.world
        while True:
            due = until_ms + 1
            kind = ""
            if world.expiries and world.expiries[0][0] < due:
                due, kind = world.expiries[0][0], "expiry"
            for account in world.accounts.values():
                if account.dms_deadline_ms is not None and account.dms_deadline_ms < due:
                    due, kind = account.dms_deadline_ms, "dms"
            if world.next_funding_ms < due:
                due, kind = world.next_funding_ms, "funding"
            if not kind:
                return
            world.now = max(world.now, due)
            if kind == "expiry":
                _, _, order = heapq.heappop(world.expiries)
                if order.is_open and order.expiry_ms is not None and order.expiry_ms <= due:
                    self.matcher.close(order, EXPIRED, None)
            elif kind == "dms":
                self._fire_switches(due)
            else:
                self._apply_funding(due)
                world.next_funding_ms += world.config.funding_interval_ms

    # -- the dead man's switch --------------------------------------------------------------
    def set_switch(self, account_id: int, countdown_s: int) -> None:
        """Arm or re-arm the dead man's switch; 0 disarms (SPEC §4.11)."""
        account = self.world.account(account_id)
        if countdown_s < 0:
            raise SimReject(400, "countdownTime must be a non-negative number of seconds", 400)
        account.dms_deadline_ms = None if countdown_s == 0 else self.world.now + countdown_s * 1000
        self._next_switch_ms = _UNKNOWN

    def switch_deadline(self, account_id: int) -> int | None:
        return self.world.account(account_id).dms_deadline_ms

    def fire_switch(self, account_id: int) -> bool:
        """Expire an armed dead man's switch now (fault drills); False if it was not armed."""
        account = self.world.account(account_id)
        if account.dms_deadline_ms is None:
            return False
        account.dms_deadline_ms = self.world.now
        self._next_switch_ms = _UNKNOWN
        self.run(self.world.now)
        return True

    def _fire_switches(self, due: int) -> None:
        for account in self.world.accounts.values():
            if account.dms_deadline_ms is not None and account.dms_deadline_ms <= due:
                account.dms_deadline_ms = None
                for order in list(account.open_orders.values()):
                    self.matcher.close(order, CANCELLED, None)

    # -- funding ----------------------------------------------------------------------------
    def _apply_funding(self, at_ms: int) -> None:
        world = self.world
        for m in world.markets.values():
            rate = m.funding_rate
            m.funding_points.append(FundingRatePoint(market=m.name, rate=rate, ts=at_ms))
            world.events.append(FundingRateEvent(market=m.name, rate=rate, ts=at_ms, applied=True))
            mark = m.mark_fraction
            for account in world.accounts.values():
                position = account.positions.get(m.name)
                if position is None or not position.lots:
                    continue
                signed_value = position.signed_value(m.terms.lot, mark)
                amount = funding_amount(signed_value, Fraction(rate))
                account.pay_funding(position, amount, at_ms)
                account.funding_history.append(
                    FundingPaymentRecord(
                        id=next(world.funding_ids),
                        account_id=account.info.id,
                        market=m.name,
                        position_id=position.id,
                        side=position.side,
                        size=m.spec.lots_to_qty(abs(position.lots)),
                        value=to_decimal(abs(signed_value)),
                        mark_price=m.mark,
                        funding_fee=to_decimal(amount),
                        funding_rate=rate,
                        paid_ms=at_ms,
                    )
                )
                world.events.append(
                    PositionEvent(
                        account_id=account.info.id, position=world.position_state(account, m.name), ts=at_ms
                    )
                )
                world.emit_balance(account)
