"""Refused orders: how long an order slot pauses after a rejection, and what a refused
replace means for the order it was to replace.

Pure: the Executor passes the refusal's reason and the time and gets back the slot's next
`Pacing` or the event for the old order; it performs nothing here. Pauses follow the one
backoff formula (`extmm.domain.backoff`) without jitter, so they are exact.
"""

from __future__ import annotations

import attrs

from extmm.domain import orders as om
from extmm.domain.backoff import Backoff

# Reasons meaning a routine race, not a problem with the order: the book moved under a
# post-only quote at the touch, or the order being replaced filled (or went) first.
ROUTINE_REJECTIONS = ("POST_ONLY_FAILED", "PREV_ORDER_NOT_FOUND")
# Codes of a refused replace whose `cancelId` order is not at the venue (SPEC §2.2 error
# table: 1142 `EditOrderNotFound`; §4.12 status reason), as they appear in its reason.
PREV_NOT_FOUND_CODES = ("1142", "EditOrderNotFound", "PREV_ORDER_NOT_FOUND")

# Routine races retry soon: 0.1 s, doubling up to 2 s.
ROUTINE_BACKOFF = Backoff(initial=0.1, factor=2.0, cap=2.0, jitter=0.0)
REJECT_CAP_S = 30.0  # any other refusal: the first pause doubles up to this
RATE_LIMITED_PAUSE_S = 1.0  # a 429 without Retry-After


def reject_backoff(first_pause_s: float) -> Backoff:
    """The pacing of non-routine refusals: `first_pause_s`, doubling up to 30 s."""
    return Backoff(initial=first_pause_s, factor=2.0, cap=REJECT_CAP_S, jitter=0.0)


def is_routine(reason: str) -> bool:
    return any(routine in reason for routine in ROUTINE_REJECTIONS)


@attrs.frozen(kw_only=True)
class Pacing:
    """One order slot's run of refusals and the earliest time it may send a new order."""

    reject_streak: int = 0
    retry_at: float = 0.0  # trio time; no new order (place or replace) before it

    def holds(self, now: float) -> bool:
        """True while the slot must not send a new order."""
        return now < self.retry_at

    def pause(self, reason: str, *, first_pause_s: float) -> float:
        """The pause after one more refusal for `reason` (the streak including it)."""
        policy = ROUTINE_BACKOFF if is_routine(reason) else reject_backoff(first_pause_s)
        return policy.delay(self.reject_streak)

    def refused(self, reason: str, *, now: float, first_pause_s: float) -> Pacing:
        """A refused order: wait before sending again, longer each time in a row."""
        pause = self.pause(reason, first_pause_s=first_pause_s)
        return Pacing(reject_streak=self.reject_streak + 1, retry_at=now + pause)

    def rate_limited(self, *, now: float, retry_after: float | None) -> Pacing:
        """A 429: wait what the venue asked for (or a second); the streak is unchanged."""
        pause = retry_after if retry_after else RATE_LIMITED_PAUSE_S
        return attrs.evolve(self, retry_at=now + pause)

    def accepted(self) -> Pacing:
        """The venue holds the slot's order: the run of refusals is over."""
        return attrs.evolve(self, reject_streak=0)


def replace_refused(new: om.OrderRecord | None, *, at: float) -> om.OrderEvent | None:
    """The event for the replaced order once its replacement was definitely refused.

    A refused replacement leaves the old order untouched — unless the refusal says the old
    order is not there (then it is gone). None: the replacement was not refused (it went
    out, or its outcome is unknown), so nothing can be concluded about the old order.
    """
    if new is None or new.state is not om.OrderState.REJECTED:
        return None
    reason = new.status_reason or ""
    if any(code in reason for code in PREV_NOT_FOUND_CODES):
        return om.NotFound(at=at)
    return om.CancelFailed(at=at, reason=reason)


def slot_keeps_old(old: om.OrderRecord | None) -> bool:
    """After a refused replace, the slot goes on with the old order while it may be open."""
    return old is not None and old.may_be_open
