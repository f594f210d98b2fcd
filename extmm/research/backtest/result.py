"""What a backtest run produced (`BacktestResult`) and the one-line summary it prints."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from extmm.domain.markouts import MarkoutDone
from extmm.research.backtest.metrics import (
    PNL_KEYS,
    MarketSample,
    fill_ratio,
    max_abs_inventory_usd,
    net_pnl_series,
    per_minute_changes,
    sharpe,
)
from extmm.research.backtest.observe import BOOK, ObservedFill
from extmm.research.backtest.quality import fill_bursts, markout_report, sharpe_basis, time_at_limit
from supervisors.root import RunSummary


@attrs.define
class BacktestResult:
    summary: RunSummary
    samples: list[MarketSample]
    fills: list[ObservedFill]
    market_events_by_kind: dict[str, int]  # book_levels, trades (prints), mark, funding
    messages_by_kind: dict[str, int]  # stream messages: book frames, mark, funding, account updates...
    orders_placed: int
    virtual_seconds: float
    started_at: float  # trio time the bot was ready (fills' `at` counts from here)
    limit_usd: float
    quote_cap_usd: float
    mode: str
    details: dict[str, Any]
    venue_open_orders: int  # our orders still open on the venue after shutdown
    markouts: list[MarkoutDone] = attrs.Factory(list)  # settled markouts, keyed by trade id
    order_latency_ms: float = 0.0
    feed_latency_ms: float | None = None  # None: replay at the recorded receive time

    @property
    def market_events(self) -> int:
        """L2 level updates + trade prints + mark + funding updates the actors received."""
        return sum(self.market_events_by_kind.values())

    @property
    def messages(self) -> int:
        """Stream messages the actors received (market frames and account updates)."""
        return sum(self.messages_by_kind.values())

    @property
    def events(self) -> int:
        """The backtest's "events" are market events (hftbacktest's unit)."""
        return self.market_events

    @property
    def markets(self) -> tuple[str, ...]:
        return self.summary.markets

    def to_json(self, *, wall_seconds: float) -> dict[str, Any]:
        """The one-line summary the `backtest` command prints."""
        fills = self.summary.fills
        series = net_pnl_series(self.samples)
        changes = per_minute_changes(series)
        basis = sharpe_basis(len(changes))

        def per_s(count: int) -> float | None:
            return round(count / wall_seconds, 1) if wall_seconds > 0 else None

        return {
            "virtual_seconds": round(self.virtual_seconds, 3),
            "wall_seconds": round(wall_seconds, 3),
            "events": self.market_events,
            "events_per_s": per_s(self.market_events),
            "market_events": self.market_events,
            "market_events_per_s": per_s(self.market_events),
            "messages": self.messages,
            "messages_per_s": per_s(self.messages),
            "orders_sent": self.summary.orders_sent,
            "fills": fills,
            "pnl": {k: float(self.summary.pnl.get(k, Decimal(0))) for k in PNL_KEYS},
            "max_abs_inventory_usd": round(max_abs_inventory_usd(self.samples, self.fills), 2),
            "limit_usd": self.limit_usd,
            "sharpe": _round(sharpe(changes)) if basis["reported"] else None,
            "sharpe_basis": basis,
            "fill_ratio": _round(fill_ratio(fills, self.summary.orders_sent)),
            "latency_ms": {
                "order": self.order_latency_ms,
                "feed": "recorded" if self.feed_latency_ms is None else self.feed_latency_ms,
            },
            "fill_bursts": fill_bursts(self.fills),
            "markouts": markout_report(self.fills, self.markouts),
            "time_at_limit": time_at_limit(self.samples, self.limit_usd),
            "mode": self.mode,
            "markets": list(self.markets),
            "events_by_kind": dict(sorted(self.market_events_by_kind.items())),
            "messages_by_kind": dict(sorted(self.messages_by_kind.items())),
            "book_frames": self.messages_by_kind.get(BOOK, 0),
            "open_orders_at_exit": self.venue_open_orders,
            "position": {k: float(v) for k, v in self.summary.position.items()},
            **self.details,
        }


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)
