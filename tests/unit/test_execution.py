"""The Executor's per-side decision: place, replace, cancel, coalesce, refresh."""

from __future__ import annotations

from extmm.domain.execution import ActionKind, LiveOrder, SideTarget, decide, price_moved_bps


def live(ticks: int = 100_000, lots: int = 10, placed_at: float = 0.0, expires_at: float = 3600.0) -> LiveOrder:
    return LiveOrder(external_id="x-1", ticks=ticks, lots=lots, placed_at=placed_at, expires_at=expires_at)


def run(target, live_order, now=10.0, threshold=2.0, coalesce=0.4):
    return decide(target=target, live=live_order, now=now, replace_threshold_bps=threshold, coalesce_s=coalesce)


def test_nothing_to_do_when_nothing_wanted_and_nothing_live():
    assert run(None, None).kind is ActionKind.NONE


def test_place_when_target_and_nothing_live():
    action = run(SideTarget(ticks=99_990, lots=5), None)
    assert action.kind is ActionKind.PLACE
    assert action.target == SideTarget(ticks=99_990, lots=5)


def test_cancel_when_side_denied_or_zero():
    assert run(None, live()).kind is ActionKind.CANCEL
    assert run(SideTarget(ticks=100_000, lots=0), live()).kind is ActionKind.CANCEL


def test_small_moves_below_threshold_are_ignored():
    # 1 tick on 100,000 = 0.1 bps < 2 bps
    assert run(SideTarget(ticks=100_001, lots=10), live()).kind is ActionKind.NONE


def test_move_past_threshold_replaces():
    action = run(SideTarget(ticks=100_030, lots=10), live())  # 3 bps
    assert action.kind is ActionKind.REPLACE
    assert action.target.ticks == 100_030


def test_threshold_zero_replaces_on_any_tick():
    assert run(SideTarget(ticks=100_001, lots=10), live(), threshold=0.0).kind is ActionKind.REPLACE


def test_size_change_replaces():
    assert run(SideTarget(ticks=100_000, lots=20), live(lots=10)).kind is ActionKind.REPLACE
    assert run(SideTarget(ticks=100_000, lots=11), live(lots=10)).kind is ActionKind.NONE


def test_coalescing_waits_out_the_window():
    action = run(SideTarget(ticks=100_100, lots=10), live(placed_at=9.9), now=10.0, coalesce=0.4)
    assert action.kind is ActionKind.NONE
    assert abs(action.wait_s - 0.3) < 1e-9
    later = run(SideTarget(ticks=100_100, lots=10), live(placed_at=9.9), now=10.3, coalesce=0.4)
    assert later.kind is ActionKind.REPLACE


def test_refresh_before_expiry_ignores_coalescing():
    action = run(SideTarget(ticks=100_000, lots=10), live(placed_at=9.99, expires_at=10.0), now=10.0)
    assert action.kind is ActionKind.REPLACE
    assert action.reason == "refresh before expiry"


def test_price_moved_bps():
    assert price_moved_bps(10_000, 10_001) == 1.0
    assert price_moved_bps(0, 5) == float("inf")
