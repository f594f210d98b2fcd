"""Markouts: how the mid moved after each of our fills — the measure of adverse selection.

Pure and incremental, used alike by the live journal, backtests and quoting guards. A fill's
markout at horizon h is the mid in force h seconds after the fill, seen from our side:

    markout_bps = side × (mid(t + h) − fill_price) / fill_price × 10 000

with side +1 for a buy and −1 for a sell. Positive means the market moved our way (or we
earned the half spread and it stayed); negative means we were picked off. The "mid in force
at t + h" is the last mid observed at or before t + h, so the answer does not depend on how
often mids are sampled after the horizon. Times are plain seconds on one clock (trio's, or
a backtest's virtual clock).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterable, Sequence

import attrs

HORIZONS_S: tuple[float, ...] = (1.0, 10.0, 60.0)


def markout_bps(side: int, fill_price: float, later_mid: float) -> float:
    """Markout of one fill in basis points of its price (positive = in our favour)."""
    if side not in (1, -1):
        raise ValueError(f"side must be +1 (buy) or -1 (sell), got {side!r}")
    if not fill_price > 0:
        raise ValueError(f"fill price must be positive, got {fill_price!r}")
    return side * (later_mid - fill_price) / fill_price * 10_000.0


@attrs.frozen(kw_only=True)
class MarkoutDone:
    """One fill's markout at one horizon, known once the clock passed fill time + horizon."""

    key: Hashable
    horizon_s: float
    mid: float  # the mid in force at fill time + horizon
    bps: float


@attrs.define
class MarkoutTracker:
    """Matches fills with the mids that follow them.

    `add_fill` registers a fill; `observe_mid` reports mids in time order and returns the
    markouts that became known. Pending fills are bounded by `max_pending` (the oldest are
    dropped and counted in `dropped`), so a stream without mids cannot grow memory forever.
    """

    horizons_s: Sequence[float] = HORIZONS_S
    max_pending: int = 100_000
    dropped: int = 0
    _heap: list[tuple[float, int, Hashable, int, float, float]] = attrs.field(factory=list)
    _seq: int = 0
    _last_t: float = -math.inf
    _last_mid: float | None = None

    def add_fill(self, key: Hashable, t: float, side: int, price: float) -> None:
        markout_bps(side, price, price)  # validates side and price
        for horizon in self.horizons_s:
            if len(self._heap) >= self.max_pending * max(1, len(self.horizons_s)):
                heapq.heappop(self._heap)
                self.dropped += 1
            self._seq += 1
            heapq.heappush(self._heap, (t + horizon, self._seq, key, side, price, horizon))

    def observe_mid(self, t: float, mid: float) -> list[MarkoutDone]:
        """A mid observed at time `t` (non-decreasing); returns the markouts now settled."""
        if t < self._last_t:
            raise ValueError(f"mids must come in time order: {t} after {self._last_t}")
        done: list[MarkoutDone] = []
        while self._heap and self._heap[0][0] <= t:
            due, _, key, side, price, horizon = heapq.heappop(self._heap)
            # the mid in force at `due`: this one if it lands exactly then, else the previous
            in_force = mid if (due == t or self._last_mid is None) else self._last_mid
            done.append(MarkoutDone(key=key, horizon_s=horizon, mid=in_force,
                                    bps=markout_bps(side, price, in_force)))
        self._last_t, self._last_mid = t, mid
        return done

    @property
    def pending(self) -> int:
        return len(self._heap)


def mean_by_horizon(
    done: Iterable[MarkoutDone], horizons_s: Sequence[float] = HORIZONS_S
) -> dict[float, float | None]:
    """Average markout (bps) per horizon; None for a horizon with no settled fill."""
    sums: dict[float, list[float]] = {h: [] for h in horizons_s}
    for item in done:
        sums.setdefault(item.horizon_s, []).append(item.bps)
    return {h: (sum(v) / len(v) if v else None) for h, v in sorted(sums.items())}
