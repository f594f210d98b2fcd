"""Typed failures of the venue edge.

    VenueError
    ├── RateLimited            HTTP 429; back off and tell the breaker
    ├── AuthError              HTTP 401/403; the API key is wrong or lacks rights
    ├── OrderRejected          the venue refused the request with an application code
    │   └── OrderBuildFailed   the order could not be built or signed; nothing was sent
    ├── TransientServerError   HTTP 5xx; safe to retry reads
    ├── NetworkError           connect/read failure or timeout; outcome of a write unknown
    ├── MalformedResponse      the body is not the JSON envelope we expect
    └── StreamError
        ├── StreamClosed       the server closed the WebSocket (or it stalled)
        └── SequenceGap        a `seq` was skipped, repeated or went backwards

Messages never include secrets: request headers are not part of any error text.
"""

from __future__ import annotations

import trio


class VenueError(Exception):
    """Base of every venue failure.

    `placed` is set on failures of an order placement: False when the order is known not
    to exist at the venue, True when it turned out to exist, None when unknown.
    """

    placed: bool | None = None


class RateLimited(VenueError):
    def __init__(self, message: str = "rate limited (HTTP 429)", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthError(VenueError):
    pass


class OrderRejected(VenueError):
    def __init__(self, code: int | str | None, message: str, http_status: int | None = None) -> None:
        super().__init__(f"rejected by venue: code={code} {message}".strip())
        self.code = code
        self.venue_message = message
        self.http_status = http_status


class OrderBuildFailed(OrderRejected):
    """The order could not be built or signed (e.g. a value the SDK refuses), so it was
    never sent: a definite rejection (`placed` False) tracked like the venue's own."""

    placed = False

    def __init__(self, message: str) -> None:
        super().__init__("BUILD_FAILED", message, None)


class TransientServerError(VenueError):
    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class NetworkError(VenueError):
    pass


class MalformedResponse(VenueError):
    pass


class StreamError(VenueError):
    pass


class StreamClosed(StreamError):
    pass


class SequenceGap(StreamError):
    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"sequence gap: expected seq {expected}, got {got}")
        self.expected = expected
        self.got = got


# What a stream consumer survives by reconnecting (anything else is a bug: let it crash,
# supervised): venue failures, socket errors, timeouts.
RECOVERABLE_STREAM_ERRORS = (StreamError, VenueError, OSError, trio.TooSlowError)
