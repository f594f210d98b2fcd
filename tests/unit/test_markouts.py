"""Markouts: the mid in force at fill time + horizon, seen from our side."""

import pytest

from extmm.domain.markouts import MarkoutTracker, markout_bps, mean_by_horizon


def test_sign_convention():
    assert markout_bps(1, 100.0, 101.0) == pytest.approx(100.0)  # bought, price rose: good
    assert markout_bps(-1, 100.0, 101.0) == pytest.approx(-100.0)  # sold, price rose: picked off
    with pytest.raises(ValueError):
        markout_bps(0, 100.0, 100.0)
    with pytest.raises(ValueError):
        markout_bps(1, 0.0, 100.0)


def test_mid_in_force_at_horizon_not_the_next_sample():
    t = MarkoutTracker(horizons_s=(1.0, 10.0))
    t.observe_mid(0.0, 100.0)
    t.add_fill("a", 0.5, 1, 100.0)
    assert t.observe_mid(1.0, 100.5) == []  # due 1.5: not yet
    done = t.observe_mid(5.0, 90.0)  # at 1.5 the mid in force was 100.5
    assert [(d.key, d.horizon_s, d.mid) for d in done] == [("a", 1.0, 100.5)]
    assert done[0].bps == pytest.approx(50.0)
    done = t.observe_mid(10.5, 99.0)  # exactly at the due time: this mid
    assert [(d.horizon_s, d.mid) for d in done] == [(10.0, 99.0)]
    assert t.pending == 0
    assert mean_by_horizon(done, (1.0, 10.0, 60.0)) == {1.0: None, 10.0: pytest.approx(-100.0), 60.0: None}


def test_out_of_order_mids_rejected_and_pending_bounded():
    t = MarkoutTracker(horizons_s=(1.0,), max_pending=2)
    t.observe_mid(5.0, 1.0)
    with pytest.raises(ValueError):
        t.observe_mid(4.0, 1.0)
    for i in range(5):
        t.add_fill(i, 6.0 + i, -1, 1.0)
    assert t.pending == 2 and t.dropped == 3
    done = t.observe_mid(100.0, 0.5)
    assert sorted(d.key for d in done) == [3, 4]
    assert all(d.bps == pytest.approx(0.0) for d in done)  # mid in force was still 1.0
