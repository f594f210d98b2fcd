"""OTP's restart intensity as a sliding window over time (pure: the caller passes `now`)."""

from __future__ import annotations

from collections import deque


class RestartWindow:
    """OTP's restart intensity: at most `intensity` restarts within any `period` seconds.

    A restart exactly `period` seconds old still counts (OTP keeps `t >= now - period`).
    """

    def __init__(self, intensity: int, period: float) -> None:
        self.intensity = intensity
        self.period = period
        self._times: deque[float] = deque()

    def add(self, now: float) -> bool:
        """Record a restart at `now`; False when that exceeds the intensity (escalate)."""
        self._forget_before(now - self.period)
        self._times.append(now)
        return len(self._times) <= self.intensity

    def count(self, now: float) -> int:
        self._forget_before(now - self.period)
        return len(self._times)

    def clear(self) -> None:
        self._times.clear()

    def _forget_before(self, threshold: float) -> None:
        while self._times and self._times[0] < threshold:
            self._times.popleft()

