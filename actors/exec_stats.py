"""The Executor's running totals and REST latency window, published as `ExecStats`."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

from extmm.domain import orders as om
from extmm.domain.stats import nearest_rank
from extmm.domain.units import MarketSpec
from extmm.ops.telemetry import ExecStats, LiveOrderView

LATENCY_REFRESH_S = 0.5  # sorting 512 samples at every action is waste


class ExecCounters:
    def __init__(self) -> None:
        self.sent = self.replaces = self.cancels = self.rejects = self.orphans = 0
        self.reject_reasons: Counter[str] = Counter()
        self.latencies: deque[float] = deque(maxlen=512)
        self._latency_ms = (0.0, 0.0)  # p50, p99, recomputed at most every LATENCY_REFRESH_S
        self._latency_at = float("-inf")

    def count_reject(self, reason: str) -> None:
        self.rejects += 1
        self.reject_reasons[reason] += 1

    def stats(self, spec: MarketSpec, open_records: Iterable[om.OrderRecord], *, now: float) -> ExecStats:
        """`open_records`: everything that may rest at the venue, pending states included —
        the orders the Executor is watching (and will cancel or settle)."""
        open_views = tuple(
            LiveOrderView(
                side=rec.side.value,
                price=spec.ticks_to_price(rec.price_ticks),
                qty=spec.lots_to_qty(rec.remaining_lots),
                external_id=rec.external_id,
            )
            for rec in open_records
        )
        if now >= self._latency_at + LATENCY_REFRESH_S:
            lat = sorted(self.latencies)
            self._latency_ms = ((nearest_rank(lat, 0.5) or 0.0) * 1000, (nearest_rank(lat, 0.99) or 0.0) * 1000)
            self._latency_at = now
        return ExecStats(
            market=spec.name,
            open_orders=open_views,
            orders_sent=self.sent,
            replaces=self.replaces,
            cancels=self.cancels,
            rejects=self.rejects,
            reject_reasons=tuple(sorted(self.reject_reasons.items())),
            orphans_cancelled=self.orphans,
            latency_p50_ms=self._latency_ms[0],
            latency_p99_ms=self._latency_ms[1],
            at=now,
        )
