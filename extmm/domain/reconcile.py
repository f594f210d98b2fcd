"""Reconciliation with the venue and settlement of ambiguous orders, as decisions.

The Executor lists our open orders at the venue and looks orders up by externalId; this
module says what those answers mean: which open orders are orphans to cancel, which
tracked orders are still open after their cancel, what a failed place leaves (final or
unknown), which orders whose outcome is unknown (a timeout, a 5xx) are due for a lookup,
and when a settled record may be forgotten. Plain data in, decisions out. "Unknown is a
state": an order leaves the possibly-open set only on the venue's word — a status, or a
lookup that finds nothing (`orders.NotFound`).
"""

from __future__ import annotations

from collections.abc import Mapping

from extmm.domain import orders as om

FORGET_AFTER_S = 60.0  # a settled record is kept this long (late echoes), then dropped


def tracked_open(rec: om.OrderRecord | None) -> bool:
    """An order open at the venue is ours to follow when we track it as possibly open;
    anything else of ours open there (from before a restart, or a record already settled
    or forgotten) is an orphan and gets cancelled."""
    return rec is not None and rec.may_be_open


def still_open_after_cancel(rec: om.OrderRecord | None, *, in_flight: bool, live: bool) -> bool:
    """Open at the venue (after its update was applied), yet no slot's order and no request
    about it in flight: our cancel (or the replace that was to cancel it) did not take, so
    it is cancelled again. (Its age cannot tell: the update just applied refreshed it.)"""
    return rec is not None and rec.may_be_open and not in_flight and not live


def lookup_due(rec: om.OrderRecord, *, open_at_venue: bool, now: float, grace_s: float) -> bool:
    """Tracked as possibly open but not in the venue's open orders: settle it by externalId
    — once its request has had `grace_s` to be answered, sooner when an earlier request
    about it ended ambiguously (`needs_lookup`)."""
    if open_at_venue:
        return False
    if rec.state is om.OrderState.PENDING_NEW and now - rec.created_at < grace_s:
        return False
    return not (now - rec.updated_at < grace_s and not rec.needs_lookup)


def failed_place(*, known_not_placed: bool, at: float, reason: str, detail: str) -> om.OrderEvent:
    """A place request that failed without the venue's refusal: final only when we know
    it was not carried out; otherwise its outcome is unknown and it stays pending until
    the stream or a lookup settles it (never assumed absent)."""
    if known_not_placed:
        return om.SendFailed(at=at, reason=reason)
    return om.Unknown(at=at, detail=detail)


def forgettable(records: Mapping[str, om.OrderRecord], *, now: float) -> list[str]:
    """Settled records older than `FORGET_AFTER_S` (bounded memory)."""
    return [ext for ext, rec in records.items() if rec.is_terminal and now - rec.updated_at > FORGET_AFTER_S]

