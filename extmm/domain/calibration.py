"""Calibrate the quote models from market data: σ, and the fill intensity A·exp(−k·δ).

Pure (no I/O, no clock: times are passed in), so the Quoter can run the same estimators
online over a rolling window (`OnlineCalibrator`). Units are the models' (see
`extmm.domain.quoting`): σ in price units per √second, δ and 1/k in price units, A in
fills per second per side.

- σ: mids sampled on a regular grid (`interval_s`, last value at or before each point);
  σ = √(mean of squared changes / interval). Sampling at 1 s or more keeps tick
  rounding and bid/ask bounce small next to the diffusion.
- A, k: every aggressive order (the prints of one trade message on one side) reached
  some depth δ = |deepest print − mid before it|. A resting order at distance δ is filled
  by every aggressor that reaches δ, so the fill intensity is the arrival rate of
  aggressors reaching at least δ, per side: λ(δ) = #(depth ≥ δ) / (2·T). A weighted
  least-squares line through (δ, ln λ(δ)) at the observed depths gives ln A and −k.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from extmm.domain.l2 import BadFrame, L2Book, parse_prints
from extmm.domain.units import MarketSpec


@attrs.frozen(kw_only=True)
class IntensityFit:
    A: float  # noqa: N815 - the models' name: fills per second per side at δ = 0
    k: float  # per price unit
    r2: float  # of the weighted fit in log space
    points: int  # depths used
    events: int  # aggressors seen
    depths: tuple[float, ...]
    rates: tuple[float, ...]  # λ(δ) per side per second at each depth


@attrs.frozen(kw_only=True)
class Calibration:
    market: str
    sigma: float | None  # price units per √s
    sigma_rel: float | None  # σ / mean mid: relative per √s (what the Book actor estimates)
    mid: float | None
    duration_s: float
    mid_samples: int
    fit: IntensityFit | None

    @property
    def A(self) -> float | None:  # noqa: N802 - the models' name
        return None if self.fit is None else self.fit.A

    @property
    def k(self) -> float | None:
        return None if self.fit is None else self.fit.k


# -- estimators ------------------------------------------------------------------------------


def resample(times: Sequence[float], values: Sequence[float], interval_s: float) -> list[float]:
    """Values at t0, t0+interval, … (the last value at or before each point); times ascending."""
    if not times:
        return []
    out: list[float] = []
    t = times[0]
    end = times[-1]
    while t <= end + 1e-9:
        out.append(values[bisect.bisect_right(times, t + 1e-9) - 1])
        t += interval_s
    return out


def sigma_from_mids(
    times: Sequence[float], mids: Sequence[float], *, interval_s: float = 1.0
) -> float | None:
    """σ in price units per √s from mids observed at `times` (seconds); None with under 10 changes."""
    grid = resample(times, mids, interval_s)
    changes = [b - a for a, b in zip(grid, grid[1:], strict=False)]
    if len(changes) < 10:
        return None
    return math.sqrt(sum(c * c for c in changes) / len(changes) / interval_s)


def fit_intensity(
    depths: Sequence[float],
    duration_s: float,
    *,
    min_depth: float = 0.0,
    sides: int = 2,
    min_count: int = 10,
    max_points: int = 60,
) -> IntensityFit | None:
    """Fit λ(δ) = A·exp(−k·δ) to the depths aggressors reached over `duration_s` seconds.

    Points are the distinct observed depths ≥ `min_depth` (quantised to 1e-9) with at
    least `min_count` aggressors at or beyond them, thinned to `max_points`; weights are
    those counts (the Poisson variance of ln λ is 1/count). `min_depth` keeps the fit off
    the touch: an aggressor that stops short of the touch prints nothing, so counts at
    depths the touch hides are censored, not exponential. None when fewer than 3 points
    qualify or the slope is not negative.
    """
    if duration_s <= 0 or not depths:
        return None
    ordered = sorted(depths)
    if ordered[0] < 0.0:
        ordered = [max(d, 0.0) for d in ordered]
    n = len(ordered)
    points: list[tuple[float, int]] = []
    # Depths from min_depth on, while at least min_count aggressors reach them; a depth
    # equal (to 1e-9) to the one before it is the same point. Two depths 2e-9 apart or
    # more never are, which spares rounding nearly all of them.
    for i in range(bisect.bisect_left(ordered, min_depth - 1e-9), n - max(min_count, 1) + 1):
        d = ordered[i]
        if i and d - ordered[i - 1] < 2e-9 and round(d, 9) == round(ordered[i - 1], 9):
            continue
        points.append((d, n - i))  # n - i: aggressors with depth ≥ d (ordered ascending)
    if len(points) > max_points:
        step = len(points) / max_points
        points = [points[int(j * step)] for j in range(max_points)]
    if len(points) < 3:
        return None
    xs = [d for d, _ in points]
    ys = [math.log(c / (sides * duration_s)) for _, c in points]
    ws = [float(c) for _, c in points]
    sw = sum(ws)
    mx = sum(w * x for w, x in zip(ws, xs, strict=True)) / sw
    my = sum(w * y for w, y in zip(ws, ys, strict=True)) / sw
    sxx = sum(w * (x - mx) ** 2 for w, x in zip(ws, xs, strict=True))
    sxy = sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys, strict=True))
    if sxx <= 0:
        return None
    slope = sxy / sxx
    if slope >= 0:
        return None
    intercept = my - slope * mx
    syy = sum(w * (y - my) ** 2 for w, y in zip(ws, ys, strict=True))
    r2 = (sxy * sxy) / (sxx * syy) if syy > 0 else 1.0
    return IntensityFit(
        A=math.exp(intercept),
        k=-slope,
        r2=r2,
        points=len(points),
        events=n,
        depths=tuple(xs),
        rates=tuple(math.exp(y) for y in ys),
    )


def censoring_depth(touch_depths: Sequence[float], tick: float) -> float:
    """Where the fit may start: one tick beyond the usual (90th percentile) touch distance.

    At the touch itself the survival curve is censored (shallow aggressors print nothing)
    and blurred by the mid moving between book frames; a tick further out it is not."""
    if not touch_depths:
        return 0.0
    ordered = sorted(touch_depths)
    return ordered[min(int(0.9 * len(ordered)), len(ordered) - 1)] + tick


def aggressor_depths(mid: float, prints: Iterable[tuple[bool, float]]) -> list[float]:
    """Depth reached by each side's aggressor in one trade message: [(taker is buy, price)] → δ ≥ 0."""
    deepest: dict[bool, float] = {}
    for taker_buy, price in prints:
        depth = price - mid if taker_buy else mid - price
        if depth > deepest.get(taker_buy, -math.inf):
            deepest[taker_buy] = depth
    return [max(d, 0.0) for d in deepest.values()]


# -- from recorded frames --------------------------------------------------------------------


class MarketObserver:
    """Turns one market's recorded frames into mid observations and aggressor depths (pure)."""

    def __init__(self, spec: MarketSpec) -> None:
        self.spec = spec
        self.book = L2Book(spec)
        self.times: list[float] = []
        self.mids: list[float] = []
        self.depths: list[float] = []
        self.depth_times: list[float] = []
        self.touch_depths: list[float] = []  # distance of the touch from the mid at each trade message
        self.bad_frames = 0
        self.first_s: float | None = None
        self.last_s: float | None = None

    def _seen(self, t_s: float) -> None:
        if self.first_s is None:
            self.first_s = t_s
        self.last_s = t_s

    def on_book(self, t_s: float, frame_type: str | None, data: Mapping[str, Any]) -> None:
        self._seen(t_s)
        try:
            self.book.apply(frame_type, data)
        except BadFrame:
            self.bad_frames += 1
            return
        mid = self.book.mid
        if mid is not None:
            self.times.append(t_s)
            self.mids.append(mid)

    def on_trades(self, t_s: float, data: Any) -> None:
        self._seen(t_s)
        mid = self.book.mid
        if mid is None:
            return
        try:
            prints = parse_prints(data, self.spec, self.book.ticks, self.book.lots)
        except BadFrame:
            self.bad_frames += 1
            return
        tick = self.book.tick
        for depth in aggressor_depths(mid, ((buy, ticks * tick) for buy, ticks, _lots, _ts in prints)):
            self.depths.append(depth)
            self.depth_times.append(t_s)
        bid, ask = self.book.best_bid, self.book.best_ask
        if bid is not None and ask is not None:
            self.touch_depths.append((ask - bid) * 0.5 * tick)

    def calibrate(self, *, interval_s: float = 1.0, min_count: int = 10) -> Calibration:
        duration = (
            (self.last_s - self.first_s) if self.first_s is not None and self.last_s is not None else 0.0
        )
        sigma = sigma_from_mids(self.times, self.mids, interval_s=interval_s)
        mean_mid = sum(self.mids) / len(self.mids) if self.mids else None
        return Calibration(
            market=self.spec.name,
            sigma=sigma,
            sigma_rel=sigma / mean_mid if sigma is not None and mean_mid else None,
            mid=mean_mid,
            duration_s=duration,
            mid_samples=len(self.mids),
            fit=fit_intensity(
                self.depths,
                duration,
                min_depth=censoring_depth(self.touch_depths, self.book.tick),
                min_count=min_count,
            ),
        )


def observe_records(
    records: Iterable[Mapping[str, Any]], specs: Mapping[str, MarketSpec]
) -> dict[str, MarketObserver]:
    """Feed decoded recording lines (`extmm.research.record` format) to one observer per market in `specs`.

    Times are the frames' receive times (`t`, epoch ms) in seconds; the book is replayed
    in file order, so each trade message is measured against the mid just before it."""
    observers = {name: MarketObserver(spec) for name, spec in specs.items()}
    for record in records:
        kind = record.get("k")
        market = record.get("m")
        observer = observers.get(market) if isinstance(market, str) else None
        frame = record.get("f")
        t = record.get("t")
        if observer is None or not isinstance(frame, dict) or not isinstance(t, int | float):
            continue
        t_s = t / 1000.0
        data = frame.get("data")
        if kind == "orderbook" and isinstance(data, dict):
            observer.on_book(t_s, frame.get("type"), data)
        elif kind == "trades":
            observer.on_trades(t_s, data)
    return observers


# -- online, over a rolling window -------------------------------------------------------------


class OnlineCalibrator:
    """Rolling-window σ, A and k for the Quoter (`ModelConfig.recalibrate_window_s`).

    Feed it every mid (`on_mid`) and every aggressor's depth (`on_aggressor`, or the prints
    of a trade message with `on_prints`); `estimate(now)` fits over the last `window_s`
    and returns None until there is enough data. With the market's `tick` and the touch
    distance of each trade message (`on_prints(touch=…)`), the intensity fit starts where
    `MarketObserver`'s does, one tick beyond the usual touch (`censoring_depth`)."""

    def __init__(
        self, market: str, *, window_s: float = 900.0, interval_s: float = 1.0, min_count: int = 10, tick: float = 0.0
    ) -> None:
        self.market = market
        self.window_s = window_s
        self.interval_s = interval_s
        self.min_count = min_count
        self.tick = tick
        self._mids: deque[tuple[float, float]] = deque()
        self._depths: deque[tuple[float, float]] = deque()
        self._touches: deque[tuple[float, float]] = deque()
        self._started: float | None = None

    def on_mid(self, t: float, mid: float) -> None:
        if not math.isfinite(mid) or mid <= 0:
            return
        if self._started is None:
            self._started = t
        # Only what the resampling needs: one mid per interval is plenty.
        if self._mids and t - self._mids[-1][0] < self.interval_s * 0.5:
            self._mids[-1] = (self._mids[-1][0], mid)
        else:
            self._mids.append((t, mid))

    def on_aggressor(self, t: float, depth: float) -> None:
        self._depths.append((t, max(depth, 0.0)))

    def on_prints(
        self, t: float, mid: float, prints: Iterable[tuple[bool, float]], *, touch: float | None = None
    ) -> None:
        """The prints of one trade message `[(taker is buy, price)]`, against the mid before
        them; `touch`: the touch's distance from that mid (half the spread), price units."""
        for depth in aggressor_depths(mid, prints):
            self.on_aggressor(t, depth)
        if touch is not None:
            self._touches.append((t, touch))

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s
        for rows in (self._mids, self._depths, self._touches):
            while rows and rows[0][0] < horizon:
                rows.popleft()

    def estimate(self, now: float) -> Calibration | None:
        self._trim(now)
        if self._started is None or len(self._mids) < 10:
            return None
        start = max(self._started, now - self.window_s)
        duration = now - start
        times = [t for t, _ in self._mids]
        mids = [m for _, m in self._mids]
        sigma = sigma_from_mids(times, mids, interval_s=self.interval_s)
        mean_mid = sum(mids) / len(mids)
        min_depth = censoring_depth([d for _, d in self._touches], self.tick) if self.tick > 0 else 0.0
        fit = fit_intensity(
            [d for _, d in self._depths], duration, min_depth=min_depth, min_count=self.min_count
        )
        if sigma is None and fit is None:
            return None
        return Calibration(
            market=self.market,
            sigma=sigma,
            sigma_rel=sigma / mean_mid if sigma is not None else None,
            mid=mean_mid,
            duration_s=duration,
            mid_samples=len(mids),
            fit=fit,
        )


# -- config snippets ------------------------------------------------------------------------------


def model_snippets(
    cal: Calibration, *, gamma: float = 0.002, horizon_s: float = 60.0, funding_horizon_s: float = 3600.0
) -> dict[str, dict[str, Any]]:
    """`model` objects for a market config (`extmm.config.ModelConfig`) from a calibration.

    gamma (risk aversion) is a choice, not an estimate; σ is not configured (the Book actor
    estimates it live) and is reported beside the snippets."""
    if cal.fit is None:
        return {}
    k = float(f"{cal.fit.k:.6g}")
    a = float(f"{cal.fit.A:.6g}")
    return {
        "avellaneda_stoikov": {
            "type": "avellaneda_stoikov",
            "gamma": gamma,
            "k": k,
            "horizon_s": horizon_s,
            "funding_horizon_s": funding_horizon_s,
        },
        "glft": {
            "type": "glft",
            "gamma": gamma,
            "A": a,
            "k": k,
            "funding_horizon_s": funding_horizon_s,
        },
    }
