"""Executor decisions: diff one side's approved target against its live order.

Pure: given the target (ticks, lots or nothing), what is resting (or in flight) and the
time, return the one action to take now. The Executor actor performs it and never has
two requests in flight for one side; this module only decides.
"""

from __future__ import annotations

import enum

import attrs


class ActionKind(enum.Enum):
    NONE = "none"  # nothing to do (or wait: see `wait_s`)
    PLACE = "place"
    REPLACE = "replace"
    CANCEL = "cancel"


@attrs.frozen(kw_only=True)
class SideTarget:
    ticks: int
    lots: int


@attrs.frozen(kw_only=True)
class LiveOrder:
    """The side's current order as the Executor tracks it."""

    external_id: str
    ticks: int
    lots: int  # remaining (unfilled) size
    placed_at: float  # trio time of the last place/replace
    expires_at: float  # trio time at which the order should be refreshed


@attrs.frozen(kw_only=True)
class Action:
    kind: ActionKind
    target: SideTarget | None = None
    wait_s: float = 0.0  # for NONE: re-evaluate after this long (coalescing, refresh)
    reason: str = ""


NOTHING = Action(kind=ActionKind.NONE)


def price_moved_bps(old_ticks: int, new_ticks: int) -> float:
    if old_ticks <= 0:
        return float("inf")
    return abs(new_ticks - old_ticks) / old_ticks * 10_000.0


def decide(
    *,
    target: SideTarget | None,
    live: LiveOrder | None,
    now: float,
    replace_threshold_bps: float,
    coalesce_s: float,
    size_threshold: float = 0.2,
) -> Action:
    """One decision for one side.

    - no target and something live → cancel it;
    - a target and nothing live → place;
    - both → replace when the price moved at least `replace_threshold_bps` (and at least
      one tick), the size differs by more than `size_threshold` of the target, or the
      order is about to expire; but not sooner than `coalesce_s` after the last
      place/replace, so a burst of book updates becomes one replace;
    - a live order larger than the target is cut at once (no size tolerance, no
      coalescing): Risk sized the target so that a fill cannot pass a position limit (#16).
    """
    if target is None or target.lots <= 0:
        if live is None:
            return NOTHING
        return Action(kind=ActionKind.CANCEL, reason="side denied")
    if live is None:
        return Action(kind=ActionKind.PLACE, target=target, reason="new quote")
    if live.lots > target.lots:
        return Action(kind=ActionKind.REPLACE, target=target, reason="size cut by risk")
    expiring = now >= live.expires_at
    moved = target.ticks != live.ticks and price_moved_bps(live.ticks, target.ticks) >= replace_threshold_bps
    resized = abs(target.lots - live.lots) > size_threshold * target.lots
    if not (expiring or moved or resized):
        return NOTHING
    reason = "refresh before expiry" if expiring else ("price moved" if moved else "size changed")
    age = now - live.placed_at
    # The tolerance keeps float rounding from asking for a wait of 1e-16 s forever.
    if not expiring and age < coalesce_s - 1e-6:
        return Action(kind=ActionKind.NONE, wait_s=coalesce_s - age, reason=f"coalescing: {reason}")
    return Action(kind=ActionKind.REPLACE, target=target, reason=reason)


def hold(
    action: Action,
    *,
    now: float,
    retry_at: float,
    needs_approval: bool,
    open_orders: int,
    max_open_orders: int,
    live_unacknowledged: bool,
) -> Action:
    """`decide`'s action, held back or changed by what the slot knows beyond its target.

    A new order (place or replace) waits while the slot pauses after a refusal, while a
    fill since the last approval awaits Risk's judgement (the approved size assumed the
    position before it), and while `max_open_orders` may be open — unsettled orders
    (cancel or place outcome unknown) count: reconciliation settles them first rather than
    new ones stacking on top. A replace of an order whose placement has an unknown outcome
    (timeout, 5xx) becomes a cancel by externalId: the venue cannot replace an order it
    may not have; the new price goes out as a fresh order after that.
    """
    if action.kind not in (ActionKind.PLACE, ActionKind.REPLACE):
        return action
    if now < retry_at:
        return Action(kind=ActionKind.NONE, wait_s=retry_at - now, reason="backing off")
    if needs_approval:
        return Action(kind=ActionKind.NONE, reason="filled: waiting for Risk")
    if open_orders >= max_open_orders:
        return Action(kind=ActionKind.NONE, wait_s=0.5, reason="open-order cap")
    if action.kind is ActionKind.REPLACE and live_unacknowledged:
        return Action(kind=ActionKind.CANCEL, reason="placement outcome unknown: cancel, then place afresh")
    return action


def idle_wait(
    action: Action, *, now: float, default_s: float, stale_at: float | None, expires_at: float | None
) -> float:
    """How long a slot sleeps on NONE (unless woken): the action's wait, or `default_s`, but
    no later than its targets go stale (`stale_at`) or its order is due for a refresh
    (`expires_at`); never zero, since a timer already due would spin the loop."""
    wait = action.wait_s if action.wait_s > 0 else default_s
    if stale_at is not None:
        wait = min(wait, stale_at - now + 0.001)
    if expires_at is not None:
        wait = min(wait, max(expires_at - now, 0.0) + 0.001)
    return max(wait, 0.001)
