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

import attrs

from extmm.backtest.observe import ObservedFill
from extmm.domain.markouts import HORIZONS_S, MarkoutTracker, mean_by_horizon

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


def write_fills_csv(fills: Iterable[ObservedFill], path: Path, *, t0: float = 0.0) -> None:
    """One row per fill; `t_s` is virtual seconds since the start, `ts_ms` the venue's epoch time."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(FILL_COLUMNS)
        for f in fills:
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
                )
            )


def fill_markouts(fills, samples, started_at: float, horizons_s=HORIZONS_S) -> dict[str, float | None]:
    """Mean markout (bps, + = in our favour) of our fills per horizon, against the sampled
    mids (the shared tracker, `extmm.domain.markouts`); keys are the horizons in seconds."""
    by_market: dict[str, list] = {}
    for s in samples:
        if s.mid is not None:
            by_market.setdefault(s.market, []).append((s.t, s.mid))
    done = []
    for market, mids in by_market.items():
        tracker = MarkoutTracker(horizons_s=horizons_s)
        events = sorted(
            [(f.at - started_at, 0, i, f) for i, f in enumerate(fills) if f.market == market]
            + [(t, 1, i, mid) for i, (t, mid) in enumerate(mids)],
            key=lambda e: (e[0], e[1]),
        )
        for t, kind, i, item in events:
            if kind == 0:
                tracker.add_fill(i, t, 1 if item.side == "BUY" else -1, float(item.price))
            else:
                done.extend(tracker.observe_mid(t, item))
    return {f"{h:g}s": (None if v is None else round(v, 3)) for h, v in mean_by_horizon(done, horizons_s).items()}
