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
