"""Honest numbers about a backtest's fills: bursts, markouts, time at the limit, Sharpe's basis.

Pure functions over plain values (the markout arithmetic is the shared
`extmm.domain.markouts`). Definitions (also in `docs/backtest/README.md`):

- fill burst: a fill that comes within `window_ms` (venue trade time) of the previous fill
  on the same side of the same market, on a different order of ours — the bot re-quoted
  into an aggressive sweep and was hit again. `fills` counts such fills, `bursts` the runs
  they form, `longest` the most fills in one run (the first fill of a run included).
- time at limit: the share of sampled time a market's |position × mid| was at or above
  `AT_LIMIT_FRACTION` of `max_net_position_usd` (the risk check then cuts or denies the
  side that would grow it), per market and for any market.
- Sharpe: reported only with at least `MIN_SHARPE_PERIODS` per-minute changes of net PnL
  (fewer give an annualised number that means nothing), with its basis next to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from extmm.domain.markouts import HORIZONS_S, MarkoutDone, mean_by_horizon
from extmm.research.backtest.metrics import MINUTES_PER_YEAR, MarketSample
from extmm.research.backtest.observe import ObservedFill

BURST_WINDOW_MS = 20
AT_LIMIT_FRACTION = 0.95
MIN_SHARPE_PERIODS = 240  # four hours of minutes


def fill_bursts(fills: Iterable[ObservedFill], *, window_ms: int = BURST_WINDOW_MS) -> dict[str, int]:
    """Same-side fill bursts (see the module docstring)."""
    last: dict[tuple[str, str], ObservedFill] = {}
    run: dict[tuple[str, str], int] = {}
    burst_fills = bursts = longest = 0
    for fill in sorted(fills, key=lambda f: (f.ts_ms, f.trade_id)):
        key = (fill.market, fill.side)
        prev = last.get(key)
        if prev is not None and fill.ts_ms - prev.ts_ms <= window_ms:
            if fill.order_id != prev.order_id:  # another order of ours hit in the same sweep
                burst_fills += 1
                if run[key] == 1:
                    bursts += 1
                run[key] += 1
                longest = max(longest, run[key])
        else:
            run[key] = 1
        last[key] = fill
    return {"window_ms": window_ms, "fills": burst_fills, "bursts": bursts, "longest": longest}


def time_at_limit(
    samples: Sequence[MarketSample], limit_usd: float, *, fraction: float = AT_LIMIT_FRACTION
) -> dict[str, Any]:
    """Share of sampled time at the inventory limit, per market and for any market."""
    by_t: dict[float, list[MarketSample]] = {}
    for s in samples:
        by_t.setdefault(s.t, []).append(s)
    times = sorted(by_t)
    if len(times) < 2 or limit_usd <= 0:
        return {"threshold_usd": round(limit_usd * fraction, 6), "any": None, "by_market": {}}
    threshold = limit_usd * fraction
    total = times[-1] - times[0]
    per_market: dict[str, float] = {}
    any_market = 0.0
    for t, t_next in zip(times, times[1:], strict=False):
        dt = t_next - t
        hit = False
        for s in by_t[t]:
            per_market.setdefault(s.market, 0.0)
            if abs(s.position_usd) >= threshold:
                per_market[s.market] += dt
                hit = True
        if hit:
            any_market += dt
    return {
        "threshold_usd": round(threshold, 6),
        "any": round(any_market / total, 6),
        "by_market": {m: round(v / total, 6) for m, v in sorted(per_market.items())},
    }


def sharpe_basis(periods: int) -> dict[str, Any]:
    """What the reported Sharpe is computed from, and why it may be missing."""
    enough = periods >= MIN_SHARPE_PERIODS
    return {
        "of": "per-minute changes of net PnL (USD, all markets)",
        "annualised_by": f"sqrt({MINUTES_PER_YEAR})",
        "periods": periods,
        "min_periods": MIN_SHARPE_PERIODS,
        "reported": enough,
    }


def markout_report(
    fills: Sequence[ObservedFill],
    done: Iterable[MarkoutDone],
    *,
    horizons_s: Sequence[float] = HORIZONS_S,
) -> dict[str, Any]:
    """Average markout per horizon (bps, positive = in our favour) and how many fills settled."""
    done = list(done)
    means = mean_by_horizon(done, horizons_s)
    counts: dict[float, int] = dict.fromkeys(horizons_s, 0)
    for item in done:
        counts[item.horizon_s] = counts.get(item.horizon_s, 0) + 1
    return {
        "mean_bps": {_label(h): None if v is None else round(v, 4) for h, v in means.items()},
        "settled": {_label(h): counts.get(h, 0) for h in horizons_s},
        "fills": len(fills),
    }


def per_fill_markouts(done: Iterable[MarkoutDone]) -> Mapping[Any, dict[float, float]]:
    """{fill key: {horizon: bps}} for the fills CSV."""
    out: dict[Any, dict[float, float]] = {}
    for item in done:
        out.setdefault(item.key, {})[item.horizon_s] = item.bps
    return out


def _label(horizon_s: float) -> str:
    return f"{horizon_s:g}s"
