"""What a backtest run reports: samples of the bot's state, and the numbers derived from them.

Pure functions over plain values. Definitions (also in `docs/backtest/README.md`):
- Sharpe: of the per-minute changes of the account's net PnL (USD, all markets),
  mean / standard deviation (sample, n−1) × √525 600 — annualised, no risk-free rate;
  None when there are fewer than two full minutes or the changes do not vary.
- fill ratio: our fills / orders sent (new orders and replaces; cancels not counted).
- max |inventory| USD: the largest |position × price| of any single market, checked
  after every fill (at the fill price) and at every sample (at the book mid).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from extmm.research.backtest.observe import ObservedFill

PNL_KEYS = ("spread", "inventory", "fees", "funding", "net")
MINUTES_PER_YEAR = 365 * 24 * 60


@attrs.frozen(kw_only=True)
class MarketSample:
    """One market's state at virtual time `t` (seconds since the backtest started)."""

    t: float
    market: str
    mid: float | None  # the bot's book mid
    bid: float | None  # our best resting bid on the venue, as the Executor tracks it
    ask: float | None
    position: float  # base asset, signed
    position_usd: float
    pnl: dict[str, float]  # PNL_KEYS


def net_pnl_series(samples: Iterable[MarketSample]) -> list[tuple[float, float]]:
    """(t, net PnL of all markets) per sample time, in time order."""
    totals: dict[float, float] = {}
    for s in samples:
        totals[s.t] = totals.get(s.t, 0.0) + s.pnl.get("net", 0.0)
    return sorted(totals.items())


def per_minute_changes(series: Sequence[tuple[float, float]], *, step_s: float = 60.0) -> list[float]:
    """Changes of a (t, value) series between consecutive whole minutes (last value at or before each)."""
    if not series:
        return []
    start, end = series[0][0], series[-1][0]
    changes: list[float] = []
    i = 0
    last_value = series[0][1]
    previous: float | None = None
    boundary = start
    while boundary <= end + 1e-9:
        while i < len(series) and series[i][0] <= boundary + 1e-9:
            last_value = series[i][1]
            i += 1
        if previous is not None:
            changes.append(last_value - previous)
        previous = last_value
        boundary += step_s
    return changes


def sharpe(changes: Sequence[float], *, periods_per_year: float = MINUTES_PER_YEAR) -> float | None:
    """Annualised Sharpe ratio of per-period PnL changes (None if undefined)."""
    n = len(changes)
    if n < 2:
        return None
    mean = sum(changes) / n
    variance = sum((c - mean) ** 2 for c in changes) / (n - 1)
    if variance <= 0.0:
        return None
    return mean / math.sqrt(variance) * math.sqrt(periods_per_year)


def fill_ratio(fills: int, orders_sent: int) -> float | None:
    return fills / orders_sent if orders_sent else None


def max_abs_inventory_usd(samples: Iterable[MarketSample], fills: Iterable[ObservedFill]) -> float:
    peak = 0.0
    for s in samples:
        peak = max(peak, abs(s.position_usd))
    for f in fills:
        peak = max(peak, abs(float(f.position_after * f.price)))
    return peak


FILL_COLUMNS = (
    "t_s",
    "ts_ms",
    "trade_id",
    "market",
    "side",
    "price",
    "qty",
    "fee",
    "is_taker",
    "position_after",
)


MARKOUT_COLUMNS = ("markout_1s_bps", "markout_10s_bps", "markout_60s_bps")


def write_fills_csv(
    fills: Iterable[ObservedFill], path: Path, *, t0: float = 0.0, markouts: Iterable[Any] = ()
) -> None:
    """One row per fill; `t_s` is virtual seconds since the start, `ts_ms` the venue's epoch time;
    markouts (bps, `extmm.domain.markouts`) at 1/10/60 s, empty when not settled by the end."""
    by_trade: dict[Any, dict[float, float]] = {}
    for m in markouts:
        by_trade.setdefault(m.key, {})[m.horizon_s] = m.bps
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(FILL_COLUMNS + MARKOUT_COLUMNS)
        for f in fills:
            settled = by_trade.get(f.trade_id, {})
            marks = tuple("" if h not in settled else f"{settled[h]:.4f}" for h in (1.0, 10.0, 60.0))
            writer.writerow(
                (
                    f"{f.at - t0:.3f}",
                    f.ts_ms,
                    f.trade_id,
                    f.market,
                    f.side,
                    f.price,
                    f.qty,
                    f.fee,
                    int(f.is_taker),
                    f.position_after,
                    *marks,
                )
            )


