"""Circuit breaker state machine, driven with explicit timestamps."""

from __future__ import annotations

import pytest

from extmm.config import BreakerConfig
from extmm.domain.breaker import (
    BreakerClosed,
    BreakerHalfOpen,
    BreakerOpened,
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    RequestHealth,
    TripReason,
)
from supervisors.breaker import settings_from_config

OK, ERROR, LIMITED = RequestHealth.OK, RequestHealth.ERROR, RequestHealth.RATE_LIMITED


def breaker(**kw: object) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(**kw))  # type: ignore[arg-type]


def trip_now(b: CircuitBreaker, at: float) -> None:
    (opened,) = b.trip(at, "drill", reason=TripReason.ERROR_RATE)  # a non-latching reason
    assert isinstance(opened, BreakerOpened)


# -- trip conditions ------------------------------------------------------------------------


def test_a_burst_of_429s_trips() -> None:
    b = breaker(max_429_per_min=5)
    for t in range(5):
        assert b.record_request(float(t), LIMITED, 0.05) == ()
    (opened,) = b.record_request(5.0, LIMITED, 0.05)
    assert isinstance(opened, BreakerOpened)
    assert (opened.reason, opened.trip_count, opened.cooldown_s, opened.dms_countdown_s) == (
        "rate_limit",
        1,
        30.0,
        10,
    )
    assert opened.detail == "6 rate-limited requests within 60s"
    assert not opened.latched
    assert b.state is BreakerState.OPEN and not b.allows_quoting
    assert b.quote_fraction(5.0) == 0.0


def test_429s_spread_over_more_than_a_minute_do_not_trip() -> None:
    b = breaker(max_429_per_min=5)
    for i in range(12):
        assert b.record_request(13.0 * i, LIMITED) == ()
    assert b.statistics(143.0).rate_limited_last_min == 5


def test_error_rate_counts_only_once_there_are_enough_requests() -> None:
    b = breaker(max_error_rate=0.2, min_requests=20)
    for t in range(10):
        assert b.record_request(float(t), ERROR) == ()  # 100 % errors, but only 10 requests
    for t in range(10, 19):
        assert b.record_request(float(t), OK) == ()
    (opened,) = b.record_request(19.0, OK)
    assert isinstance(opened, BreakerOpened)
    assert (opened.reason, opened.detail) == ("error_rate", "10/20 requests failed within 60s")


def test_an_error_rate_equal_to_the_limit_does_not_trip() -> None:
    b = breaker(max_error_rate=0.2, min_requests=20)
    outcomes = [ERROR] * 4 + [OK] * 16
    assert all(b.record_request(float(t), o) == () for t, o in enumerate(outcomes))
    assert b.statistics(20.0).error_rate == 0.2
    assert b.state is BreakerState.CLOSED


def test_errors_leave_the_window() -> None:
    b = breaker(max_error_rate=0.2, min_requests=20, window_s=60)
    for t in range(10):
        b.record_request(float(t), ERROR)
    # By t=100 the errors are older than the window: 20 fresh successes are all that count.
    assert all(b.record_request(100.0 + t, OK) == () for t in range(20))
    assert b.statistics(119.0).error_rate == 0.0


def test_venue_rejections_and_429s_are_not_errors() -> None:
    b = breaker(max_error_rate=0.2, min_requests=20, max_429_per_min=100)
    for t in range(10):
        b.record_request(float(t), "rejected", 0.01)
        b.record_request(float(t), "rate_limited", 0.01)
    for t in range(10):
        b.record_request(10.0 + t, "ok", 0.01)
    assert b.state is BreakerState.CLOSED
    (opened,) = [e for t in range(10) for e in b.record_request(20.0 + t, "network_error", 0.01)]
    assert isinstance(opened, BreakerOpened) and opened.reason == "error_rate"


def test_venue_outcome_names_map_to_breaker_outcomes() -> None:
    assert RequestHealth.from_venue("ok") is OK
    assert RequestHealth.from_venue("rejected") is OK
    assert RequestHealth.from_venue("rate_limited") is LIMITED
    for name in ("server_error", "network_error", "auth_error", "malformed", "something_new"):
        assert RequestHealth.from_venue(name) is ERROR


def test_p99_latency_over_the_limit_trips() -> None:
    b = breaker(max_latency_ms=2000, min_requests=20)
    for t in range(99):
        b.record_request(t * 0.1, OK, 0.1)
    assert b.record_request(9.9, OK, 3.0) == ()  # 1 slow of 100: p99 is the 99th value, fast
    assert b.statistics(9.9).p99_latency_ms == pytest.approx(100.0)
    (opened,) = b.record_request(10.0, OK, 3.0)  # 2 slow of 101: the p99 rank is slow now
    assert isinstance(opened, BreakerOpened)
    assert (opened.reason, opened.detail) == ("latency", "p99 latency 3000 ms within 60s")


def test_latency_needs_the_minimum_number_of_samples() -> None:
    b = breaker(max_latency_ms=2000, min_requests=20)
    assert all(b.record_request(float(t), OK, 5.0) == () for t in range(19))
    assert b.statistics(19.0).p99_latency_ms is None
    (opened,) = b.record_request(19.0, OK, 5.0)
    assert opened.reason == "latency"  # type: ignore[union-attr]


def test_consecutive_dms_failures_trip() -> None:
    b = breaker(dms_failures_to_trip=3)
    assert b.record_dms_failure(0) == () and b.record_dms_failure(1) == ()
    assert b.record_dms_success(2) == ()
    assert b.record_dms_failure(3) == () and b.record_dms_failure(4) == ()
    (opened,) = b.record_dms_failure(5)
    assert (opened.reason, opened.detail) == ("dms_failures", "3 DMS heartbeats failed in a row")  # type: ignore[union-attr]


def test_market_escalations_within_the_window_trip() -> None:
    b = breaker(escalations_to_trip=2, window_s=60)
    assert b.record_escalation(0, "BTC-USD") == ()
    assert b.record_escalation(61, "ETH-USD") == ()  # the first one has left the window
    (opened,) = b.record_escalation(100, "BTC-USD")
    assert opened.reason == "market_escalation"  # type: ignore[union-attr]
    assert opened.detail == "market BTC-USD escalated (2 within 60s)"  # type: ignore[union-attr]
    never = breaker(escalations_to_trip=None)
    assert all(never.record_escalation(float(t), "BTC-USD") == () for t in range(10))


# -- the cycle ---------------------------------------------------------------------------------


def test_open_half_open_closed_with_a_quote_ramp() -> None:
    b = breaker(cooldown_s=30, probe_s=60, probe_quote_fraction=0.25)
    trip_now(b, 100)
    assert b.poll(129.9) is not None  # the trip itself, reported once
    assert b.poll(129.9) is None
    assert b.statistics(129.9).half_open_at == 130.0
    action = b.poll(130.0)
    assert action is not None
    assert (action.state, action.stop_quoting, action.resume_quoting) == (BreakerState.HALF_OPEN, False, True)
    assert (action.quote_fraction, action.dms_countdown_s) == (0.25, None)
    assert action.events == (BreakerHalfOpen(at=130.0, quote_fraction=0.25, probe_s=60.0),)
    assert b.quote_fraction(160.0) == pytest.approx(0.625)
    assert b.allows_quoting
    action = b.poll(190.0)
    assert action is not None and action.events == (BreakerClosed(at=190.0),)
    assert (action.state, action.resume_quoting, action.quote_fraction) == (BreakerState.CLOSED, True, 1.0)
    assert b.quote_fraction(190.0) == 1.0


def test_a_failure_while_half_open_reopens_with_a_longer_capped_cooldown() -> None:
    b = breaker(cooldown_s=30, cooldown_factor=2, max_cooldown_s=100, probe_s=60)
    trip_now(b, 0)
    b.poll(30)
    (reopened,) = b.record_request(31, LIMITED)  # a single 429 while probing is enough
    assert isinstance(reopened, BreakerOpened)
    assert (reopened.cooldown_s, reopened.trip_count) == (60.0, 2)
    assert b.poll(90.9) is not None and b.state is BreakerState.OPEN
    b.poll(91)
    assert b.state is BreakerState.HALF_OPEN
    (reopened,) = b.record_dms_failure(92)  # so is a single DMS failure
    assert reopened.cooldown_s == 100.0  # type: ignore[union-attr]  # 120, capped
    b.poll(192)
    (reopened,) = b.record_escalation(193, "ETH-USD")
    assert reopened.cooldown_s == 100.0  # type: ignore[union-attr]
    b.poll(293)
    b.poll(353)  # a clean probe: closed, and the cooldown is back to normal
    assert b.state is BreakerState.CLOSED
    trip_now(b, 400)
    assert b.statistics(400).cooldown_s == 30.0
    assert b.trip_count == 5


def test_old_trouble_does_not_reopen_a_half_open_breaker() -> None:
    b = breaker(max_error_rate=0.2, min_requests=20, cooldown_s=30)
    for t in range(20):
        b.record_request(t * 0.5, ERROR)
    assert b.state is BreakerState.OPEN
    b.poll(40)
    assert b.state is BreakerState.HALF_OPEN
    assert all(b.record_request(40 + t * 0.1, OK) == () for t in range(20))


def test_observations_while_open_do_not_trip_again() -> None:
    b = breaker(max_429_per_min=1)
    b.record_request(0, LIMITED)
    b.record_request(0, LIMITED)
    assert b.state is BreakerState.OPEN
    assert all(b.record_request(1 + t, LIMITED) == () for t in range(10))
    assert b.record_dms_failure(5) == () and b.record_dms_failure(6) == () and b.record_dms_failure(7) == ()
    assert b.trip_count == 1


def test_drawdown_latches_until_an_operator_resets() -> None:
    b = breaker(cooldown_s=30, probe_s=60)
    (opened,) = b.record_drawdown(10, 250.0)
    assert (opened.reason, opened.detail, opened.latched) == ("drawdown", "drawdown 250.00 USD", True)  # type: ignore[union-attr]
    assert b.record_drawdown(10.25, 251.0) == ()  # repeated kills while latched are no-ops
    b.poll(11)
    assert b.poll(10_000) is None and b.state is BreakerState.OPEN
    assert b.statistics(10_000).half_open_at is None
    (half_open,) = b.reset(10_000)
    assert isinstance(half_open, BreakerHalfOpen)
    b.poll(10_060)
    assert b.state is BreakerState.CLOSED


def test_a_latching_trip_while_open_latches_and_repeats_the_trip_actions() -> None:
    b = breaker(cooldown_s=30)
    trip_now(b, 0)
    b.poll(0)
    (opened,) = b.trip(5, "operator says stop")
    assert (opened.reason, opened.latched, opened.trip_count) == ("operator", True, 2)  # type: ignore[union-attr]
    action = b.poll(6)
    assert action is not None and action.stop_quoting and action.dms_countdown_s == 10
    assert b.poll(1000) is None and b.state is BreakerState.OPEN
    assert b.last_reason == "operator: operator says stop"
    assert b.statistics(1000).trips_by_reason == {"error_rate": 1, "operator": 1}


def test_poll_folds_everything_since_the_last_poll() -> None:
    b = breaker(max_429_per_min=0, cooldown_s=30)
    assert b.poll(0) is None
    b.record_request(1, LIMITED)
    action = b.poll(2)
    assert action is not None
    assert (action.stop_quoting, action.resume_quoting, action.state) == (True, False, BreakerState.OPEN)
    assert action.dms_countdown_s == 10
    assert action.reason == "rate_limit: 1 rate-limited requests within 60s"
    assert [type(e) for e in action.events] == [BreakerOpened]
    assert b.poll(3) is None
    assert b.state_name == "OPEN"


def test_reset_is_a_no_op_unless_open() -> None:
    b = breaker()
    assert b.reset(0) == ()
    assert b.poll(0) is None


def test_settings_from_the_config_file() -> None:
    cfg = BreakerConfig(max_429_per_min=7, max_error_rate=0.5, max_latency_ms=900, window_s=30, cooldown_s=12)
    settings = settings_from_config(cfg, min_requests=5)
    assert (settings.max_429_per_min, settings.max_error_rate, settings.max_latency_ms) == (7, 0.5, 900)
    assert (settings.window_s, settings.cooldown_s, settings.dms_backstop_sec, settings.min_requests) == (
        30,
        12,
        10,
        5,
    )
    assert CircuitBreaker(settings_from_config(cfg)).settings == settings_from_config(cfg)
    with pytest.raises(ValueError):
        BreakerSettings(probe_quote_fraction=1.5)


def test_statistics_for_the_dashboard() -> None:
    b = breaker(min_requests=2, max_error_rate=0.6)
    b.record_request(0, OK, 0.2)
    b.record_request(1, ERROR, 0.4)
    b.record_dms_failure(1)
    stats = b.statistics(1)
    assert (stats.state, stats.trip_count, stats.last_trip, stats.quote_fraction) == (
        BreakerState.CLOSED,
        0,
        None,
        1.0,
    )
    assert (stats.requests_in_window, stats.error_rate, stats.p99_latency_ms) == (
        2,
        0.5,
        pytest.approx(400.0),
    )
    assert stats.dms_consecutive_failures == 1
