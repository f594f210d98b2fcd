"""REST transport: one httpx request → data or a typed `extmm.venue.errors` failure.

Every request takes a token from the account's bucket first (priority by kind), carries
`User-Agent` (and `X-Api-Key` when private), and has its envelope checked — GETs too,
which the SDK skips (SPEC §2.2). Reads retry with capped, jittered exponential backoff;
writes never retry here. Each attempt's outcome feeds counters, a rolling latency window
and an optional observer (the circuit breaker).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import attrs
import httpx
import trio
from loguru import logger

from extmm.domain.backoff import Backoff
from extmm.domain.stats import nearest_rank
from extmm.venue.errors import (
    AuthError,
    MalformedResponse,
    NetworkError,
    OrderRejected,
    RateLimited,
    TransientServerError,
    VenueError,
)
from extmm.venue.lane import LaneError, LaneResponse, LaneTimeout, WriteLane
from extmm.venue.parse import error_details, loads, unwrap_envelope
from extmm.venue.ratelimit import Priority, TokenBucket

QueryParams = Sequence[tuple[str, str | int]] | Mapping[str, str | int] | None


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Try `attempts` times in all, pausing by the one backoff formula between tries
    (`extmm.domain.backoff`): `base_s` doubling up to `cap_s`, up to half of each pause
    taken off at random."""

    attempts: int = 4
    base_s: float = 0.25
    cap_s: float = 8.0
    backoff: Backoff = attrs.field(init=False)

    @backoff.default
    def _backoff(self) -> Backoff:
        return Backoff(initial=self.base_s, factor=2.0, cap=self.cap_s, jitter=0.5)

    def delay(self, retry: int, rng: random.Random) -> float:
        """Pause before retry number `retry` (0-based)."""
        return self.backoff.delay(retry, rng)


@attrs.frozen(kw_only=True)
class RequestOutcome:
    """One HTTP attempt, as the circuit breaker sees it.

    outcome: ok | rate_limited | server_error | network_error | rejected | auth_error | malformed.
    `latency_s` is the HTTP round trip only (token wait excluded); `at` is trio time.
    """

    operation: str  # e.g. "place_order", "get_balance"
    priority: Priority
    status: int | None  # HTTP status; None when no response arrived
    outcome: str
    latency_s: float
    at: float

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


Observer = Callable[[RequestOutcome], None]


class ChannelObserver:
    """Forward outcomes to a bounded trio memory channel without ever blocking a request.

    When the consumer lags and the channel is full, the outcome is dropped and counted
    (`dropped`): the breaker also reads `VenueStats`, so a lost sample is harmless.
    """

    def __init__(self, send_channel: trio.MemorySendChannel[RequestOutcome]) -> None:
        self._send = send_channel
        self.dropped = 0

    def __call__(self, outcome: RequestOutcome) -> None:
        try:
            self._send.send_nowait(outcome)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


@attrs.frozen(kw_only=True)
class RestStatistics:
    requests: int
    errors: int
    rate_limited: int
    server_errors: int
    latency_p50_ms: float
    latency_p99_ms: float


def _retry_after(response: httpx.Response | LaneResponse) -> float | None:
    value = response.headers.get("retry-after")  # httpx headers ignore case; the lane's are lower-case
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date; the venue is not known to send one (SPEC §7)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class RestClient:
    """Requests against the REST base URL of an `httpx.AsyncClient` owned by the caller."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        limiter: TokenBucket,
        api_key: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        observer: Observer | None = None,
        rng: random.Random | None = None,
        rate_limited_pause_s: float = 1.0,
        latency_window: int = 1024,
        lane: WriteLane | None = None,
    ) -> None:
        self._client = client
        self._lane = lane
        self._limiter = limiter
        self._api_key = api_key
        self._retry = retry
        self._observer = observer
        self._rng = rng or random.Random()
        self._rate_limited_pause_s = rate_limited_pause_s
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._requests = 0
        self._errors = 0
        self._rate_limited = 0
        self._server_errors = 0

    def __repr__(self) -> str:
        return f"RestClient(base_url={str(self._client.base_url)!r}, private={self._api_key is not None})"

    @property
    def has_api_key(self) -> bool:
        return self._api_key is not None

    @property
    def limiter(self) -> TokenBucket:
        return self._limiter

    @property
    def rng(self) -> random.Random:
        return self._rng

    # -- public -----------------------------------------------------------------------
    async def get(
        self,
        path: str,
        *,
        operation: str,
        params: QueryParams = None,
        private: bool = False,
        retry: bool = True,
    ) -> Any:
        """GET and return `data`; retried on 429 / 5xx / network failures when `retry`."""
        attempts = self._retry.attempts if retry else 1
        for attempt in range(attempts):
            try:
                return await self.request("GET", path, operation=operation, params=params, private=private)
            except (TransientServerError, NetworkError, RateLimited) as exc:
                if attempt + 1 >= attempts:
                    raise
                delay = self._retry.delay(attempt, self._rng)
                if isinstance(exc, RateLimited) and exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                logger.info("{} (attempt {}/{}); retrying in {:.2f}s", exc, attempt + 1, attempts, delay)
                await trio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: QueryParams = None,
        body: bytes | None = None,
        private: bool = False,
        priority: Priority = Priority.READ,
        allow_empty: bool = False,
        fast: bool = False,
    ) -> Any:
        """One attempt, no retry. Returns the envelope's `data` (None for an empty write ack).

        `fast`: go through the write lane when there is one (order writes)."""
        headers: dict[str, str] = {}
        if private:
            if self._api_key is None:
                raise AuthError(f"{operation}: no API key configured (public-only venue)")
            headers["X-Api-Key"] = self._api_key
        if body is not None:
            headers["Content-Type"] = "application/json"
        await self._limiter.acquire(priority)
        started = trio.current_time()
        status: int | None = None
        try:
            response: httpx.Response | LaneResponse
            if fast and self._lane is not None:
                query = urlencode(list(params.items()) if isinstance(params, Mapping) else params or [])
                try:
                    response = await self._lane.request(method, path, query=query, headers=headers, body=body)
                except LaneTimeout as exc:
                    raise NetworkError(f"{operation}: timed out ({exc})") from exc
                except LaneError as exc:
                    raise NetworkError(f"{operation}: {exc}") from exc
            else:
                try:
                    response = await self._client.request(
                        method, path, params=params, content=body, headers=headers
                    )
                except httpx.TimeoutException as exc:
                    raise NetworkError(f"{operation}: timed out ({type(exc).__name__})") from exc
                except httpx.HTTPError as exc:
                    raise NetworkError(f"{operation}: {type(exc).__name__}: {exc}") from exc
            status = response.status_code
            data = self._interpret(response, operation, allow_empty=allow_empty)
        except VenueError as exc:
            self._record(operation, priority, status, started, exc)
            raise
        self._record(operation, priority, status, started, None)
        return data

    def statistics(self) -> RestStatistics:
        ordered = sorted(self._latencies)
        return RestStatistics(
            requests=self._requests,
            errors=self._errors,
            rate_limited=self._rate_limited,
            server_errors=self._server_errors,
            latency_p50_ms=(nearest_rank(ordered, 0.50) or 0.0) * 1000.0,
            latency_p99_ms=(nearest_rank(ordered, 0.99) or 0.0) * 1000.0,
        )

    # -- internals --------------------------------------------------------------------
    def _interpret(self, response: httpx.Response | LaneResponse, operation: str, *, allow_empty: bool) -> Any:
        status = response.status_code
        if status == 429:
            retry_after = _retry_after(response)
            self._limiter.pause(retry_after if retry_after is not None else self._rate_limited_pause_s)
            raise RateLimited(f"{operation}: rate limited (HTTP 429)", retry_after=retry_after)
        if status in (401, 403):
            raise AuthError(f"{operation}: HTTP {status}, the API key was refused")
        if status >= 500:
            code, message = self._error_of(response)
            detail = f" code={code} {message}".rstrip() if code is not None or message else ""
            raise TransientServerError(f"{operation}: HTTP {status}{detail}", http_status=status)
        if not 200 <= status < 300:
            code, message = self._error_of(response)
            raise OrderRejected(code, message or f"HTTP {status} on {operation}", status)
        if not response.content.strip():
            if allow_empty:
                return None
            raise MalformedResponse(f"{operation}: empty body with HTTP {status}")
        try:
            body = loads(response.content)
            return unwrap_envelope(body, http_status=status, allow_missing_data=allow_empty)
        except MalformedResponse as exc:
            raise MalformedResponse(f"{operation}: {exc}") from None

    @staticmethod
    def _error_of(response: httpx.Response | LaneResponse) -> tuple[int | str | None, str]:
        try:
            body = loads(response.content)
        except MalformedResponse:
            return None, ""
        return error_details(body) if isinstance(body, Mapping) else (None, "")

    def _record(
        self, operation: str, priority: Priority, status: int | None, started: float, error: VenueError | None
    ) -> None:
        latency = trio.current_time() - started
        self._requests += 1
        if status is not None:
            self._latencies.append(latency)
        outcome = "ok"
        if error is not None:
            self._errors += 1
            outcome = _outcome_name(error)
            if outcome == "rate_limited":
                self._rate_limited += 1
            elif outcome == "server_error":
                self._server_errors += 1
        if self._observer is not None:
            try:
                self._observer(
                    RequestOutcome(
                        operation=operation,
                        priority=priority,
                        status=status,
                        outcome=outcome,
                        latency_s=latency,
                        at=trio.current_time(),
                    )
                )
            except Exception:  # an observer bug must not break trading
                logger.exception("request observer failed")


def _outcome_name(error: VenueError) -> str:
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, TransientServerError):
        return "server_error"
    if isinstance(error, NetworkError):
        return "network_error"
    if isinstance(error, AuthError):
        return "auth_error"
    if isinstance(error, OrderRejected):
        return "rejected"
    return "malformed"
