"""The account's REST request budget: one token bucket shared by every market, with priority.

When requests queue for tokens, cancels (and mass cancel, the dead man's switch) go first,
then new orders, then reads; equal priorities are served first come, first served. Time
is `trio.current_time()`, so trio's MockClock drives it in tests and backtests.
"""

from __future__ import annotations

import enum
from collections import deque

import attrs
import trio


class Priority(enum.IntEnum):
    """Lower value is served first."""

    CANCEL = 0  # cancel, cancel by externalId, mass cancel, dead man's switch
    PLACE = 1  # new orders and replaces
    READ = 2  # every GET


@attrs.frozen(kw_only=True)
class BucketStatistics:
    tokens_available: float  # may be negative right after a 429 pause
    capacity: float
    refill_per_s: float
    waiters: dict[Priority, int]
    granted: int  # tokens handed out since creation

    @property
    def waiting(self) -> int:
        return sum(self.waiters.values())


class _Waiter:
    __slots__ = ("priority", "wakeup")

    def __init__(self, priority: Priority) -> None:
        self.priority = priority
        self.wakeup = trio.Event()


class TokenBucket:
    """`capacity` tokens at most, refilled continuously at `refill_per_s`.

    Use `TokenBucket.per_minute(limit)` for a venue budget: it sizes the refill so that no
    60-second window can ever see more than `limit` requests, burst included.
    """

    def __init__(self, *, capacity: float, refill_per_s: float) -> None:
        if capacity < 1 or refill_per_s <= 0:
            raise ValueError("a token bucket needs capacity ≥ 1 and a positive refill rate")
        self._capacity = float(capacity)
        self._refill_per_s = float(refill_per_s)
        self._tokens = float(capacity)
        self._updated: float | None = None  # first use reads the clock (needs a trio run)
        self._queues: dict[Priority, deque[_Waiter]] = {p: deque() for p in Priority}
        self._granted = 0

    @classmethod
    def per_minute(cls, limit: int, *, burst: int | None = None) -> TokenBucket:
        """A bucket that never exceeds `limit` requests in any 60 s window.

        Worst case is a full bucket spent at once plus 60 s of refill, so the refill is
        (limit − burst) / 60 per second. Default burst: 5 % of the limit (50 of 1,000).
        """
        if limit < 2:
            raise ValueError("a per-minute limit must be at least 2")
        burst = max(1, limit // 20) if burst is None else burst
        if not 1 <= burst < limit:
            raise ValueError("burst must be at least 1 and below the per-minute limit")
        return cls(capacity=burst, refill_per_s=(limit - burst) / 60.0)

    # -- public ---------------------------------------------------------------------
    async def acquire(self, priority: Priority = Priority.READ) -> None:
        """Take one token, waiting behind every queued request of equal or higher priority."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._refill()
        if self._has_token() and not self._has_waiters_at_or_above(priority):
            # No scheduling point here: the request this token is for goes out next (a
            # yield would let every other ready task run first, on the order's latency).
            self._take()
            return
        waiter = _Waiter(priority)
        previous_head = self._head()
        self._queues[priority].append(waiter)
        if previous_head is not None and self._head() is waiter:
            previous_head.wakeup.set()  # it was sleeping for a token that is now ours
        try:
            while True:
                if self._head() is waiter:
                    self._refill()
                    if self._has_token():
                        self._take()
                        self._queues[priority].popleft()
                        self._wake_head()
                        return
                    deadline = self._updated_at() + (1.0 - self._tokens) / self._refill_per_s
                    waiter.wakeup = trio.Event()
                    with trio.move_on_at(deadline):
                        await waiter.wakeup.wait()
                else:
                    waiter.wakeup = trio.Event()
                    await waiter.wakeup.wait()
        except BaseException:
            was_head = self._head() is waiter
            try:
                self._queues[priority].remove(waiter)
            except ValueError:
                pass
            if was_head:
                self._wake_head()
            raise

    def pause(self, seconds: float) -> None:
        """Spend `seconds` of future refill now (after a 429): everyone waits that long."""
        if seconds <= 0:
            return
        self._refill()
        self._tokens = min(self._tokens, 0.0) - seconds * self._refill_per_s
        head = self._head()
        if head is not None:
            head.wakeup.set()  # its deadline moved; let it recompute

    def tokens_available(self) -> float:
        self._refill()
        return self._tokens

    def statistics(self) -> BucketStatistics:
        return BucketStatistics(
            tokens_available=self.tokens_available(),
            capacity=self._capacity,
            refill_per_s=self._refill_per_s,
            waiters={p: len(q) for p, q in self._queues.items()},
            granted=self._granted,
        )

    # -- internals ------------------------------------------------------------------
    def _updated_at(self) -> float:
        assert self._updated is not None
        return self._updated

    def _refill(self) -> None:
        now = trio.current_time()
        if self._updated is None:
            self._updated = now
            return
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self._capacity, self._tokens + elapsed * self._refill_per_s)
            self._updated = now

    def _has_token(self) -> bool:
        # Float refill lands a hair under 1.0 at the computed deadline; do not sleep again.
        return self._tokens >= 1.0 - 1e-9

    def _take(self) -> None:
        self._tokens -= 1.0
        self._granted += 1

    def _has_waiters_at_or_above(self, priority: Priority) -> bool:
        return any(self._queues[p] for p in Priority if p <= priority)

    def _head(self) -> _Waiter | None:
        for p in Priority:
            if self._queues[p]:
                return self._queues[p][0]
        return None

    def _wake_head(self) -> None:
        head = self._head()
        if head is not None:
            head.wakeup.set()
