"""Account-wide circuit breaker: CLOSED → OPEN → HALF_OPEN → CLOSED, fed with timestamps.

A pure state machine (no clock, no I/O, plain parameters): callers pass the time with
every observation. Observations may come from many tasks (request outcomes, the DMS loop, a
market's escalation hook); one task, the root's breaker child (`supervisors.breaker`, the
I/O shell), calls `poll(now)` and
executes the returned `BreakerAction`: on a trip stop quoting on every market, mass-cancel
(shielded, bounded) and shorten the dead man's switch to `dms_countdown_s`; on resume quote
again at `quote_fraction(now)` (HALF_OPEN ramps linearly to 1 over the probe period) and
restore the normal DMS countdown. The action carries the `BreakerOpened` / `BreakerHalfOpen`
/ `BreakerClosed` events to publish; observation methods also return the events they caused.

Trips (while CLOSED): more than `max_429_per_min` rate-limited requests in the last 60 s;
REST error share over `window_s` above `max_error_rate` (once `min_requests` outcomes are
in the window; 429s and venue rejections are not errors here); p99 latency over
`window_s` above `max_latency_ms` (same minimum); `dms_failures_to_trip` consecutive DMS
heartbeat failures; `escalations_to_trip` market escalations within `window_s`; a
drawdown kill; an operator signal. While HALF_OPEN the windows start empty and any 429,
DMS failure, market escalation or threshold breach re-opens it with the cooldown
multiplied by `cooldown_factor` (capped at `max_cooldown_s`); a clean probe period closes
it and resets the cooldown. Latching reasons (drawdown and operator by default) never
half-open by themselves: `reset(now)` (operator) does that.
"""

from __future__ import annotations

import bisect
import enum
from collections import Counter, deque
from collections.abc import Callable
from typing import TypeAlias

import attrs

from extmm.domain.stats import nearest_rank

RATE_LIMIT_WINDOW_S = 60.0  # `max_429_per_min` is per minute whatever `window_s` is
LATENCY_QUANTILE = 0.99
PENDING_LIMIT = 64  # transitions kept for `poll`; far more than can happen between polls


class BreakerState(enum.StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class TripReason(enum.StrEnum):
    RATE_LIMIT = "rate_limit"
    ERROR_RATE = "error_rate"
    LATENCY = "latency"
    DMS_FAILURES = "dms_failures"
    MARKET_ESCALATION = "market_escalation"
    DRAWDOWN = "drawdown"
    OPERATOR = "operator"


class RequestHealth(enum.StrEnum):
    """How the breaker judges one REST attempt (the venue edge's record of an attempt is
    `extmm.venue.rest.RequestHealth`; its `outcome` name maps here via `from_venue`)."""

    OK = "ok"
    ERROR = "error"  # transport failure, timeout, 5xx, garbage
    RATE_LIMITED = "rate_limited"  # HTTP 429

    @classmethod
    def from_venue(cls, outcome: str) -> RequestHealth:
        """Map `extmm.venue.rest.RequestHealth.outcome` names. A venue rejection (e.g.
        post-only would cross) is a healthy answer; unknown names count as errors."""
        return _VENUE_OUTCOMES.get(outcome, cls.ERROR)


_VENUE_OUTCOMES = {
    "ok": RequestHealth.OK,
    "rejected": RequestHealth.OK,
    "rate_limited": RequestHealth.RATE_LIMITED,
    "error": RequestHealth.ERROR,
    "server_error": RequestHealth.ERROR,
    "network_error": RequestHealth.ERROR,
    "auth_error": RequestHealth.ERROR,
    "malformed": RequestHealth.ERROR,
}


@attrs.frozen(kw_only=True)
class BreakerOpened:
    """Trip: stop quoting everywhere, mass-cancel, shorten the DMS countdown to
    `dms_countdown_s`. Latched trips stay open until an operator resets the breaker."""

    at: float
    reason: str  # a `TripReason` value
    detail: str
    trip_count: int
    cooldown_s: float  # seconds until half-open (meaningless while latched)
    latched: bool
    dms_countdown_s: int


@attrs.frozen(kw_only=True)
class BreakerHalfOpen:
    """Quoting may resume at `quote_fraction`, ramping to 1 over `probe_s` seconds."""

    at: float
    quote_fraction: float
    probe_s: float


@attrs.frozen(kw_only=True)
class BreakerClosed:
    """Normal operation: full quoting, the normal DMS countdown."""

    at: float


BreakerEvent: TypeAlias = BreakerOpened | BreakerHalfOpen | BreakerClosed


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _fraction(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value!r}")


@attrs.frozen(kw_only=True)
class BreakerSettings:
    """The breaker's thresholds (`supervisors.breaker.settings_from_config` builds them from
    `BreakerConfig`, plus the knobs the config file does not have yet)."""

    max_429_per_min: int = 5
    max_error_rate: float = attrs.field(default=0.2, validator=_fraction)
    max_latency_ms: float = attrs.field(default=2000.0, validator=_positive)
    window_s: float = attrs.field(default=60.0, validator=_positive)
    cooldown_s: float = attrs.field(default=30.0, validator=_positive)
    dms_backstop_sec: int = 10
    min_requests: int = 20  # outcomes in the window before error rate and latency count
    dms_failures_to_trip: int = 3  # consecutive failed DMS heartbeats
    escalations_to_trip: int | None = 1  # market escalations within window_s; None: never trip
    probe_s: float = attrs.field(default=60.0, validator=_positive)  # HALF_OPEN length
    probe_quote_fraction: float = attrs.field(default=0.25, validator=_fraction)  # at HALF_OPEN entry
    cooldown_factor: float = 2.0  # per re-open from HALF_OPEN
    max_cooldown_s: float = attrs.field(default=600.0, validator=_positive)
    latching: frozenset[TripReason] = frozenset({TripReason.DRAWDOWN, TripReason.OPERATOR})



@attrs.frozen(kw_only=True)
class Trip:
    at: float
    reason: TripReason
    detail: str

    def describe(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@attrs.frozen(kw_only=True)
class BreakerAction:
    """What the root must do after the transitions since the previous `poll`.

    `stop_quoting` (a trip happened): stop quoting everywhere, mass-cancel, and set the DMS
    countdown to `dms_countdown_s`. Otherwise `resume_quoting`: quote at `quote_fraction`
    (half-open) or fully (closed), with the normal DMS countdown.
    """

    state: BreakerState  # state after the transitions
    stop_quoting: bool
    resume_quoting: bool
    quote_fraction: float
    dms_countdown_s: int | None  # the backstop countdown on a trip; None: the normal one
    reason: str  # the trip's "reason: detail", or the state reached
    events: tuple[BreakerEvent, ...]  # to publish on the EventHub


@attrs.frozen(kw_only=True)
class BreakerStatistics:
    state: BreakerState
    latched: bool
    trip_count: int
    trips_by_reason: dict[str, int]
    last_trip: Trip | None
    cooldown_s: float  # current cooldown (grows on re-open from HALF_OPEN)
    half_open_at: float | None  # when OPEN ends by itself (None: not open, or latched)
    quote_fraction: float
    requests_in_window: int
    error_rate: float | None  # None until min_requests outcomes
    p99_latency_ms: float | None  # None until min_requests samples
    rate_limited_last_min: int
    dms_consecutive_failures: int


@attrs.frozen
class _Request:
    at: float
    outcome: RequestHealth
    latency_ms: float | None


class CircuitBreaker:
    """The breaker state machine. Every method takes `now` (trio time, non-decreasing)."""

    def __init__(self, settings: BreakerSettings | None = None, *, history: int = 100) -> None:
        self.settings = settings if settings is not None else BreakerSettings()
        self.state = BreakerState.CLOSED
        self.latched = False
        self.trip_count = 0
        self.trips: deque[Trip] = deque(maxlen=history)
        self._by_reason: Counter[str] = Counter()
        self.cooldown_s = self.settings.cooldown_s
        self._opened_at: float | None = None
        self._half_open_at: float | None = None
        self._requests: deque[_Request] = deque()
        # Latencies of the window kept sorted: the p99 is then a lookup, not a sort of the
        # whole window on every request (at 400 requests/s that cost a quarter of a core).
        self._latencies_sorted: list[float] = []
        self._ok = 0
        self._errors = 0
        self._rate_limited: deque[float] = deque()
        self._escalations: deque[float] = deque()
        self._dms_failures = 0
        self._pending: deque[BreakerEvent] = deque(maxlen=PENDING_LIMIT)
        # Called (no arguments) whenever a transition is queued for `poll`: the shell's
        # loop wakes then rather than at its next tick.
        self.on_event: Callable[[], None] | None = None

    # -- observations: each returns the transitions it caused (also queued for `poll`) ------

    def record_request(
        self, now: float, outcome: RequestHealth | str, latency_s: float | None = None
    ) -> tuple[BreakerEvent, ...]:
        """One REST attempt: its outcome (or a venue outcome name) and round trip in seconds."""
        if not isinstance(outcome, RequestHealth):
            outcome = RequestHealth.from_venue(outcome)
        events = self._advance(now)
        if self.state is BreakerState.OPEN:
            return self._emit(events)
        latency_ms = None if latency_s is None else latency_s * 1000.0
        self._requests.append(_Request(now, outcome, latency_ms))
        if latency_ms is not None:
            bisect.insort(self._latencies_sorted, latency_ms)
        if outcome is RequestHealth.OK:
            self._ok += 1
        elif outcome is RequestHealth.ERROR:
            self._errors += 1
        else:
            self._rate_limited.append(now)
        self._prune(now)
        trip = self._request_trip(outcome)
        if trip is not None:
            events += self._trip(now, *trip)
        return self._emit(events)

    def record_dms_failure(self, now: float) -> tuple[BreakerEvent, ...]:
        events = self._advance(now)
        self._dms_failures += 1
        limit = 1 if self.state is BreakerState.HALF_OPEN else self.settings.dms_failures_to_trip
        if self.state is not BreakerState.OPEN and self._dms_failures >= limit:
            detail = f"{self._dms_failures} DMS heartbeats failed in a row"
            events += self._trip(now, TripReason.DMS_FAILURES, detail)
        return self._emit(events)

    def record_dms_success(self, now: float) -> tuple[BreakerEvent, ...]:
        self._dms_failures = 0
        return self._emit(self._advance(now))

    def record_escalation(self, now: float, market: str) -> tuple[BreakerEvent, ...]:
        """A market supervisor escalated (and was halted)."""
        events = self._advance(now)
        if self.state is BreakerState.OPEN or self.settings.escalations_to_trip is None:
            return self._emit(events)
        self._escalations.append(now)
        self._prune(now)
        limit = 1 if self.state is BreakerState.HALF_OPEN else self.settings.escalations_to_trip
        if len(self._escalations) >= limit:
            detail = (
                f"market {market} escalated ({len(self._escalations)} within {self.settings.window_s:g}s)"
            )
            events += self._trip(now, TripReason.MARKET_ESCALATION, detail)
        return self._emit(events)

    def record_drawdown(self, now: float, drawdown_usd: float) -> tuple[BreakerEvent, ...]:
        """The drawdown kill switch fired (the caller compares with its limit)."""
        detail = f"drawdown {drawdown_usd:.2f} USD"
        return self._emit(self._advance(now) + self._trip(now, TripReason.DRAWDOWN, detail))

    def trip(
        self, now: float, detail: str = "operator signal", reason: TripReason = TripReason.OPERATOR
    ) -> tuple[BreakerEvent, ...]:
        """Trip by hand (operator signal by default: latching)."""
        return self._emit(self._advance(now) + self._trip(now, reason, detail))

    def reset(self, now: float) -> tuple[BreakerEvent, ...]:
        """Operator: clear a latch and half-open at once (quoting resumes gradually).
        No-op unless OPEN."""
        events = self._advance(now)
        if self.state is BreakerState.OPEN:
            self.latched = False
            events += (self._half_open(now),)
        return self._emit(events)

    # -- the root's side -----------------------------------------------------------------

    def poll(self, now: float) -> BreakerAction | None:
        """Apply time-driven transitions (end of cooldown, end of probe) and return what to
        do about every transition since the previous poll; None when nothing happened.
        Call it from one task, every second or so."""
        self._emit(self._advance(now))
        if not self._pending:
            return None
        events = tuple(self._pending)
        self._pending.clear()
        opened = [e for e in events if isinstance(e, BreakerOpened)]
        stop = bool(opened)
        if stop:
            reason = f"{opened[-1].reason}: {opened[-1].detail}"
        else:
            reason = self.state.value
        return BreakerAction(
            state=self.state,
            stop_quoting=stop,
            resume_quoting=not stop and self.state is not BreakerState.OPEN,
            quote_fraction=self.quote_fraction(now),
            dms_countdown_s=self.settings.dms_backstop_sec
            if self.state is BreakerState.OPEN or stop
            else None,
            reason=reason,
            events=events,
        )

    @property
    def state_name(self) -> str:
        return self.state.value

    @property
    def last_reason(self) -> str | None:
        """ "reason: detail" of the latest trip, for the dashboard."""
        return self.trips[-1].describe() if self.trips else None

    @property
    def allows_quoting(self) -> bool:
        return self.state is not BreakerState.OPEN

    def quote_fraction(self, now: float) -> float:
        """Share of normal quoting allowed: 0 OPEN, ramping in HALF_OPEN, 1 CLOSED."""
        if self.state is BreakerState.CLOSED:
            return 1.0
        if self.state is BreakerState.OPEN or self._half_open_at is None:
            return 0.0
        start = self.settings.probe_quote_fraction
        progress = min(1.0, max(0.0, (now - self._half_open_at) / self.settings.probe_s))
        return start + (1.0 - start) * progress

    def statistics(self, now: float) -> BreakerStatistics:
        self._prune(now)
        counted = self._ok + self._errors
        reopen = None
        if self.state is BreakerState.OPEN and not self.latched and self._opened_at is not None:
            reopen = self._opened_at + self.cooldown_s
        return BreakerStatistics(
            state=self.state,
            latched=self.latched,
            trip_count=self.trip_count,
            trips_by_reason=dict(self._by_reason),
            last_trip=self.trips[-1] if self.trips else None,
            cooldown_s=self.cooldown_s,
            half_open_at=reopen,
            quote_fraction=self.quote_fraction(now),
            requests_in_window=len(self._requests),
            error_rate=self._errors / counted if counted >= self.settings.min_requests else None,
            p99_latency_ms=self._p99_latency(),
            rate_limited_last_min=len(self._rate_limited),
            dms_consecutive_failures=self._dms_failures,
        )

    # -- internals ---------------------------------------------------------------------

    def _emit(self, events: tuple[BreakerEvent, ...]) -> tuple[BreakerEvent, ...]:
        self._pending.extend(events)
        if events and self.on_event is not None:
            self.on_event()
        return events

    def _request_trip(self, outcome: RequestHealth) -> tuple[TripReason, str] | None:
        s = self.settings
        limited = len(self._rate_limited)
        if outcome is RequestHealth.RATE_LIMITED and self.state is BreakerState.HALF_OPEN:
            return TripReason.RATE_LIMIT, "rate limited (HTTP 429) while half-open"
        if limited > s.max_429_per_min:
            return TripReason.RATE_LIMIT, f"{limited} rate-limited requests within {RATE_LIMIT_WINDOW_S:g}s"
        counted = self._ok + self._errors
        if counted >= s.min_requests and self._errors / counted > s.max_error_rate:
            return TripReason.ERROR_RATE, f"{self._errors}/{counted} requests failed within {s.window_s:g}s"
        p99 = self._p99_latency()
        if p99 is not None and p99 > s.max_latency_ms:
            return TripReason.LATENCY, f"p99 latency {p99:.0f} ms within {s.window_s:g}s"
        return None

    def _p99_latency(self) -> float | None:
        samples = self._latencies_sorted
        if len(samples) < self.settings.min_requests:
            return None
        return nearest_rank(samples, LATENCY_QUANTILE)

    def _prune(self, now: float) -> None:
        horizon = now - self.settings.window_s
        while self._requests and self._requests[0].at < horizon:
            gone = self._requests.popleft()
            if gone.latency_ms is not None:
                del self._latencies_sorted[bisect.bisect_left(self._latencies_sorted, gone.latency_ms)]
            if gone.outcome is RequestHealth.OK:
                self._ok -= 1
            elif gone.outcome is RequestHealth.ERROR:
                self._errors -= 1
        while self._rate_limited and self._rate_limited[0] < now - RATE_LIMIT_WINDOW_S:
            self._rate_limited.popleft()
        while self._escalations and self._escalations[0] < horizon:
            self._escalations.popleft()

    def _clear_windows(self) -> None:
        self._requests.clear()
        self._latencies_sorted.clear()
        self._ok = self._errors = 0
        self._rate_limited.clear()
        self._escalations.clear()
        self._dms_failures = 0

    def _trip(self, now: float, reason: TripReason, detail: str) -> tuple[BreakerEvent, ...]:
        latching = reason in self.settings.latching
        if self.state is BreakerState.OPEN:
            if not latching or self.latched:
                return ()
            # A latching reason while already open: latch, and repeat the trip actions.
            self.latched = True
        else:
            if self.state is BreakerState.HALF_OPEN:
                self.cooldown_s = min(
                    self.settings.max_cooldown_s, self.cooldown_s * self.settings.cooldown_factor
                )
            else:
                self.cooldown_s = self.settings.cooldown_s
            self.state = BreakerState.OPEN
            self.latched = latching
            self._opened_at = now
            self._half_open_at = None
            self._clear_windows()
        self.trip_count += 1
        self._by_reason[reason.value] += 1
        self.trips.append(Trip(at=now, reason=reason, detail=detail))
        return (
            BreakerOpened(
                at=now,
                reason=reason.value,
                detail=detail,
                trip_count=self.trip_count,
                cooldown_s=self.cooldown_s,
                latched=self.latched,
                dms_countdown_s=self.settings.dms_backstop_sec,
            ),
        )

    def _half_open(self, now: float) -> BreakerEvent:
        self.state = BreakerState.HALF_OPEN
        self._half_open_at = now
        self._clear_windows()
        return BreakerHalfOpen(
            at=now, quote_fraction=self.settings.probe_quote_fraction, probe_s=self.settings.probe_s
        )

    def _advance(self, now: float) -> tuple[BreakerEvent, ...]:
        events: tuple[BreakerEvent, ...] = ()
        if (
            self.state is BreakerState.OPEN
            and not self.latched
            and self._opened_at is not None
            and now >= self._opened_at + self.cooldown_s
        ):
            events += (self._half_open(now),)
        if (
            self.state is BreakerState.HALF_OPEN
            and self._half_open_at is not None
            and now >= self._half_open_at + self.settings.probe_s
        ):
            self.state = BreakerState.CLOSED
            self._half_open_at = None
            self.cooldown_s = self.settings.cooldown_s
            events += (BreakerClosed(at=now),)
        return events
