"""The venue's request budget per client address, as the simulator enforces it.

SPEC §7: REST is throttled per IP address — 1,000 requests a minute by default, across
all endpoints, API keys and sub-accounts; over it the venue answers HTTP 429. Neither the
window shape nor any `Retry-After` is documented (SPEC §11.10); the simulator counts a
sliding 60 s window per address and says `Retry-After` (seconds until a slot frees) on
the 429, which the bot honours when present and does without otherwise.
"""

from __future__ import annotations

from collections import deque

DEFAULT_IP_RATE_LIMIT_PER_MIN = 1000
WINDOW_S = 60.0


class AddressBudget:
    """Sliding-window request counter per address; `admit(address, now)` → None or the
    seconds to wait. Memory is bounded by the budget per address."""

    def __init__(self, per_min: int, *, window_s: float = WINDOW_S) -> None:
        if per_min <= 0:
            raise ValueError("the per-address budget must be a positive number of requests")
        self.per_min = per_min
        self.window_s = window_s
        self._seen: dict[str, deque[float]] = {}
        self.refused = 0
        self.admitted = 0

    def admit(self, address: str, now: float) -> float | None:
        times = self._seen.setdefault(address, deque())
        horizon = now - self.window_s
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) >= self.per_min:
            self.refused += 1
            return max(times[0] + self.window_s - now, 0.001)
        times.append(now)
        self.admitted += 1
        return None

    def peak(self, address: str, now: float) -> int:
        """Requests from `address` counted in the window ending now."""
        times = self._seen.get(address, deque())
        return sum(1 for t in times if t > now - self.window_s)
