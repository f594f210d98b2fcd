"""Synthetic market flow: a crowd book around a diffusing mid, and Poisson takers.

Model (all parameters in `FlowParams`, exposed so calibration tests can compare):
- the mid follows an arithmetic random walk, dmid = σ·dW, σ in price units per √second;
- the crowd rests one order per tick on `depth_levels` levels a side, `spread_ticks`
  apart at the touch, sizes growing away from the touch; as the mid moves, levels that
  end up inside the spread or beyond the depth are pulled and missing ones re-placed
  (a crowd order placed across one of our stale quotes trades with it: adverse fills);
- takers arrive on each side as a Poisson process of rate A per second; each draws a
  distance δ ~ Exponential(k) (δ in price units, k per price unit) and sweeps all
  resting liquidity from the touch to mid ∓ δ. A resting order at distance δ from the
  mid is therefore filled with intensity A·exp(−k·δ) — the Avellaneda–Stoikov form;
- the mark is the mid with a little noise; the hourly funding rate is redrawn each
  minute around `funding_mean`.

Informed flow (#16; every part off by default, all on in the `toxic` preset, see
`FLOW_PRESETS`): real flow is not that kind. With `informed_rate` > 0 a hidden fair value
leads the mid: it diffuses (σ, times `vol_regime_multiplier` in the volatile regime) and
jumps (`jump_rate` per second, sizes Exponential with mean `jump_bps`), while the mid
relaxes towards it with time constant `informed_horizon_s` (plus its own σ noise
scaled by `mid_noise_share`). Informed takers arrive at `informed_rate` per second and,
when the fair value is at least a tick away, sweep towards it and `sweep_depth_bps`
beyond — through several levels, and through any quote left between mid and fair: their
orders predict the next move. Volatility regimes: calm/volatile, each lasting an
Exponential time with mean `vol_regime_s`. Arrivals cluster (a discretised Hawkes
process): every taker raises the arrival intensity (both sides together) by
`hawkes_alpha` per second, which decays at rate `hawkes_beta` (branching ratio α/β < 1). All randomness comes from the
flow's own seeded RNG.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from extmm.domain.units import MarketSpec, Side
from extmm.sim.model import SimOrder

SECONDS_PER_DAY = 86_400.0


@attrs.frozen(kw_only=True)
class FlowParams:
    """True parameters of one market's synthetic flow.

    sigma: mid volatility in price units per √s. taker_rate (A): taker arrivals per
    second on EACH side. k: decay of the fill intensity per price unit of distance from
    the mid. level_size: crowd size at the touch, base asset; level_growth: relative
    increase per level away from it; size_jitter: each level × U(1−j, 1+j).
    """

    initial_mid: float
    sigma: float
    taker_rate: float
    k: float
    spread_ticks: int = 2
    depth_levels: int = 400
    level_size: float
    level_growth: float = 0.02
    size_jitter: float = 0.5
    mark_noise_bps: float = 0.2
    funding_mean: float = 0.0000125
    funding_noise: float = 0.000005
    # -- informed flow (off by default; see the module docstring and FLOW_PRESETS) --
    informed_rate: float = 0.0  # informed taker arrivals per second (both sides together)
    informed_horizon_s: float = 5.0  # the mid's lag behind the fair value (time constant, s)
    sweep_depth_bps: float = 0.0  # informed sweeps reach the fair value + Exp(mean this)
    mid_noise_share: float = 0.3  # with informed flow: the mid's own noise, share of σ
    jump_rate: float = 0.0  # fair-value jumps per second
    jump_bps: float = 0.0  # mean |jump|, basis points of price
    vol_regime_multiplier: float = 1.0  # σ multiplier in the volatile regime
    vol_regime_s: float = 0.0  # mean regime duration, s (0: one calm regime)
    hawkes_alpha: float = 0.0  # intensity added per taker arrival, per second
    hawkes_beta: float = 1.0  # decay rate of that excitation, per second

    def __attrs_post_init__(self) -> None:
        if self.initial_mid <= 0 or self.sigma < 0 or self.taker_rate < 0 or self.k <= 0:
            raise ValueError("FlowParams: need initial_mid > 0, sigma ≥ 0, taker_rate ≥ 0, k > 0")
        if self.spread_ticks < 1 or self.depth_levels < 1 or self.level_size <= 0:
            raise ValueError("FlowParams: need spread_ticks ≥ 1, depth_levels ≥ 1, level_size > 0")
        if min(self.informed_rate, self.sweep_depth_bps, self.mid_noise_share, self.jump_rate,
               self.jump_bps, self.vol_regime_s, self.hawkes_alpha) < 0:
            raise ValueError("FlowParams: informed-flow parameters must be ≥ 0")
        if self.informed_horizon_s <= 0 or self.vol_regime_multiplier <= 0 or self.hawkes_beta <= 0:
            raise ValueError("FlowParams: need informed_horizon_s, vol_regime_multiplier, hawkes_beta > 0")
        if self.hawkes_alpha >= self.hawkes_beta:
            raise ValueError("FlowParams: hawkes_alpha must be < hawkes_beta (else arrivals explode)")

    @property
    def informed(self) -> bool:
        """Whether any part of the informed flow is on (the default flow has none)."""
        return bool(self.informed_rate or self.jump_rate or self.vol_regime_s or self.hawkes_alpha)

    def fill_intensity(self, distance: float) -> float:
        """Expected fills per second of a resting order `distance` price units from the mid."""
        return self.taker_rate * math.exp(-self.k * max(distance, 0.0))

    @classmethod
    def scaled(
        cls,
        mid: float,
        *,
        daily_vol: float = 0.03,
        taker_rate: float = 1.0,
        k_per_bp: float = 1.0,
        touch_notional: float = 400.0,
        **overrides: Any,
    ) -> FlowParams:
        """Defaults scaled to the price: σ from a daily volatility, k per basis point of mid.

        With the defaults (A = 1/s, k = 1 per bp) a quote 3 bps from the mid is hit about
        3 times a minute per side, one 5 bps away about 0.4 times.
        """
        values: dict[str, Any] = dict(
            initial_mid=mid,
            sigma=daily_vol * mid / math.sqrt(SECONDS_PER_DAY),
            taker_rate=taker_rate,
            k=k_per_bp / (mid * 1e-4),
            level_size=touch_notional / mid,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def for_market(cls, market: Mapping[str, Any], *, preset: str = "default", **overrides: Any) -> FlowParams:
        """Defaults for a venue market object: BTC and ETH presets, else scaled by price;
        `preset` (a key of FLOW_PRESETS) adds its parameters before `overrides`."""
        if preset not in FLOW_PRESETS:
            raise ValueError(f"unknown flow preset {preset!r}; known: {', '.join(FLOW_PRESETS)}")
        mid = float(market.get("marketStats", {}).get("markPrice") or 0) or 100.0
        daily_vol = {"BTC-USD": 0.025, "ETH-USD": 0.035}.get(market["name"], 0.04)
        return cls.scaled(mid, daily_vol=daily_vol, **{**FLOW_PRESETS[preset], **overrides})


# Named flows for the simulator (`sim --flow`, `run --network paper --flow`, `backtest
# --flow`, `chaos --flow`). "default" is today's kind, uninformed flow. "toxic" is what a
# busy perpetual shows (#16): a fair value that jumps (every ~15 s, mean 6 bps) and
# diffuses 2× faster in volatile regimes (mean 60 s each), a mid that lags it by ~4 s,
# informed takers (1 per second) sweeping through to it and 2 bps beyond, fewer
# uninformed takers, and clustered arrivals (branching ratio 0.6).
FLOW_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "toxic": dict(
        taker_rate=0.5,
        k_per_bp=1.5,
        informed_rate=2.0,
        informed_horizon_s=4.0,
        sweep_depth_bps=0.5,
        jump_rate=1 / 10,
        jump_bps=8.0,
        vol_regime_multiplier=2.0,
        vol_regime_s=60.0,
        hawkes_alpha=0.6,
        hawkes_beta=1.0,
    ),
}


class CrowdSide:
    """The crowd's orders on one side: one per price, within a contiguous range."""

    __slots__ = ("is_bid", "orders", "holes", "lo", "hi")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.orders: dict[int, SimOrder] = {}
        self.holes: set[int] = set()  # prices inside [lo, hi] whose order was consumed
        self.lo = 0
        self.hi = -1  # empty range


# (is_bid, price ticks, lots) -> the order if it came to rest on the book
PlaceFn = Callable[[bool, int, int], SimOrder | None]
CancelFn = Callable[[SimOrder], None]


class MarketFlow:
    """The stochastic state of one market's flow; the engine performs the book operations."""

    def __init__(self, params: FlowParams, spec: MarketSpec, rng: random.Random) -> None:
        self.params = params
        self.spec = spec
        self.rng = rng
        self.mid = params.initial_mid
        self.tick = float(spec.tick_size)
        self.lot = float(spec.lot_size)
        self.bids = CrowdSide(is_bid=True)
        self.asks = CrowdSide(is_bid=False)
        self.funding_rate = params.funding_mean
        self._min_lots = max(spec.min_order_lots, 1)
        self._last_touch: tuple[int, int] | None = None
        # Informed flow state (unused by the default flow, which draws nothing for it).
        self.fair = self.mid
        self.volatile = False
        self._regime_left_s = 0.0
        self.excitation = 0.0  # Hawkes: extra arrivals per second, both sides together
        self.informed_takes = 0
        self.jumps = 0

    # -- randomness ---------------------------------------------------------------------
    def diffuse(self, dt_s: float) -> None:
        p = self.params
        if p.informed:
            self._diffuse_informed(dt_s)
        elif p.sigma > 0:
            self.mid += p.sigma * math.sqrt(dt_s) * self.rng.gauss(0.0, 1.0)
        # An arithmetic walk can wander to zero over very long runs; keep it positive.
        floor = self.tick * (p.spread_ticks + p.depth_levels + 1)
        self.mid = max(self.mid, floor)
        self.fair = max(self.fair, floor)

    def _diffuse_informed(self, dt_s: float) -> None:
        p = self.params
        if p.vol_regime_s > 0:
            self._regime_left_s -= dt_s
            if self._regime_left_s <= 0:
                self.volatile = not self.volatile
                self._regime_left_s = self.rng.expovariate(1.0 / p.vol_regime_s)
        sigma = p.sigma * (p.vol_regime_multiplier if self.volatile else 1.0)
        self.fair += sigma * math.sqrt(dt_s) * self.rng.gauss(0.0, 1.0)
        if p.jump_rate > 0 and self.rng.random() < p.jump_rate * dt_s:
            size = self.rng.expovariate(1.0 / p.jump_bps) if p.jump_bps > 0 else 0.0
            self.fair *= 1.0 + (size if self.rng.random() < 0.5 else -size) * 1e-4
            self.jumps += 1
        pull = 1.0 - math.exp(-dt_s / p.informed_horizon_s)
        noise = p.mid_noise_share * sigma * math.sqrt(dt_s) * self.rng.gauss(0.0, 1.0)
        self.mid += (self.fair - self.mid) * pull + noise
        if p.hawkes_alpha > 0:
            self.excitation *= math.exp(-p.hawkes_beta * dt_s)

    def _poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        threshold = math.exp(-lam)
        count = 0
        product = self.rng.random()
        while product > threshold:
            count += 1
            product *= self.rng.random()
        return count

    def takers(self, dt_s: float) -> list[tuple[bool, float]]:
        """Taker events of one step: (is_buy, δ) in arrival order (sides interleaved at random)."""
        p = self.params
        if p.informed:
            return self._informed_takers(dt_s)
        lam = p.taker_rate * dt_s
        events = [(True, 0.0)] * self._poisson(lam) + [(False, 0.0)] * self._poisson(lam)
        if len(events) > 1:
            self.rng.shuffle(events)
        return [(is_buy, self.rng.expovariate(p.k)) for is_buy, _ in events]

    def _informed_takers(self, dt_s: float) -> list[tuple[bool, float]]:
        p = self.params
        # The excitation is extra arrivals per second on both sides together, half a side.
        lam = (p.taker_rate + self.excitation / 2.0) * dt_s
        events = [(True, self.rng.expovariate(p.k)) for _ in range(self._poisson(lam))]
        events += [(False, self.rng.expovariate(p.k)) for _ in range(self._poisson(lam))]
        gap = self.fair - self.mid
        for _ in range(self._poisson(p.informed_rate * dt_s)):
            if abs(gap) < self.tick:
                continue
            beyond = self.rng.expovariate(1.0 / (p.sweep_depth_bps * 1e-4 * self.mid)) if p.sweep_depth_bps > 0 else 0.0
            events.append((gap > 0, abs(gap) + beyond))
            self.informed_takes += 1
        if len(events) > 1:
            self.rng.shuffle(events)
        self.excitation += p.hawkes_alpha * len(events)
        return events

    def sweep_limit(self, is_buy: bool, delta: float) -> int:
        """The limit price (ticks) of a taker reaching `delta` price units from the mid."""
        if is_buy:
            return math.floor((self.mid + delta) / self.tick + 1e-9)
        return math.ceil((self.mid - delta) / self.tick - 1e-9)

    def mark(self) -> float:
        noise = self.params.mark_noise_bps * 1e-4
        return self.mid * (1.0 + (self.rng.gauss(0.0, noise) if noise > 0 else 0.0))

    def redraw_funding(self, cap: float) -> float:
        rate = self.params.funding_mean
        if self.params.funding_noise > 0:
            rate += self.rng.gauss(0.0, self.params.funding_noise)
        self.funding_rate = max(-cap, min(cap, rate))
        return self.funding_rate

    def level_lots(self, distance: int) -> int:
        p = self.params
        size = p.level_size * (1.0 + p.level_growth * distance)
        if p.size_jitter > 0:
            size *= self.rng.uniform(1.0 - p.size_jitter, 1.0 + p.size_jitter)
        return max(int(size / self.lot), self._min_lots)

    # -- crowd book -------------------------------------------------------------------------
    def touch(self) -> tuple[int, int]:
        """Target best bid and best ask of the crowd, in ticks."""
        spread = self.params.spread_ticks
        best_bid = math.floor(self.mid / self.tick - spread / 2)
        return best_bid, best_bid + spread

    def on_crowd_gone(self, order: SimOrder) -> None:
        """A crowd order left the book by a fill: its level becomes a hole to re-fill."""
        side = self.bids if order.side is Side.BUY else self.asks
        if side.orders.get(order.price_ticks) is order:
            del side.orders[order.price_ticks]
            if side.lo <= order.price_ticks <= side.hi:
                side.holes.add(order.price_ticks)

    def refresh(self, place: PlaceFn, cancel: CancelFn) -> None:
        """Pull stale crowd levels, then place missing ones (stale first, so the crowd never crosses itself)."""
        best_bid, best_ask = self.touch()
        if (best_bid, best_ask) == self._last_touch and not self.bids.holes and not self.asks.holes:
            return
        self._last_touch = (best_bid, best_ask)
        depth = self.params.depth_levels
        targets = ((self.bids, best_bid - depth + 1, best_bid), (self.asks, best_ask, best_ask + depth - 1))
        for side, lo, hi in targets:
            self._pull(side, lo, hi, cancel)
        for side, lo, hi in targets:
            self._fill(side, lo, hi, place)

    def _pull(self, side: CrowdSide, lo: int, hi: int, cancel: CancelFn) -> None:
        # Every crowd order lies inside [side.lo, side.hi]; pull the parts outside [lo, hi].
        if not side.orders:
            return
        if hi < side.lo or lo > side.hi:
            stale = list(side.orders)
        else:
            stale = [p for p in range(side.lo, lo) if p in side.orders]
            stale += [p for p in range(hi + 1, side.hi + 1) if p in side.orders]
        for price in stale:
            cancel(side.orders.pop(price))

    def _fill(self, side: CrowdSide, lo: int, hi: int, place: PlaceFn) -> None:
        old_lo, old_hi = side.lo, side.hi
        missing: list[int] = [p for p in side.holes if lo <= p <= hi]
        side.holes.clear()
        if old_lo > old_hi or hi < old_lo or lo > old_hi:
            missing = list(range(lo, hi + 1))
        else:
            missing += range(lo, min(old_lo - 1, hi) + 1)
            missing += range(max(old_hi + 1, lo), hi + 1)
        side.lo, side.hi = lo, hi
        # Touch first: a crowd order crossing one of our stale quotes trades at once.
        missing.sort(reverse=side.is_bid)
        touch = hi if side.is_bid else lo
        for price in missing:
            if price in side.orders:
                continue
            order = place(side.is_bid, price, self.level_lots(abs(price - touch)))
            if order is None:
                side.holes.add(price)  # it traded away entirely against a stale quote
            else:
                side.orders[price] = order
