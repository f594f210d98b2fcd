"""Volatility of the mid: EWMA of log-returns sampled on a fixed time grid.

σ is relative (of log price) per √second, so it does not depend on the sampling interval;
`sigma_price(mid)` converts it to price units. Time is only what the caller passes in.
"""

from __future__ import annotations

import math

_GRID_EPS = 1e-9  # in intervals: a timestamp this close to a grid point is on it


class EwmaVolatility:
    """EWMA of squared log-returns of the mid sampled every `interval_s` (previous-tick:
    the mid at a grid point is the last one seen at or before it).

    `update(now_s, mid)` may come at any rate: several grid points passed at once are
    sampled together (one return carries the move, the rest are zero), in O(1); a timestamp
    older than the previous one counts as the previous one. A sample's weight halves every
    `half_life_s`. Until `min_samples` returns have been seen, `sigma` is `prior_sigma`
    (None by default).
    """

    def __init__(
        self,
        *,
        interval_s: float = 1.0,
        half_life_s: float = 60.0,
        min_samples: int = 30,
        prior_sigma: float | None = None,
    ) -> None:
        if not interval_s > 0 or not half_life_s > 0:
            raise ValueError("interval_s and half_life_s must be positive")
        if min_samples < 1:
            raise ValueError("min_samples must be at least 1")
        if prior_sigma is not None and not prior_sigma >= 0:
            raise ValueError("prior_sigma must be non-negative")
        self.interval_s = float(interval_s)
        self.half_life_s = float(half_life_s)
        self.min_samples = min_samples
        self.prior_sigma = prior_sigma
        self._decay = 0.5 ** (self.interval_s / self.half_life_s)  # weight kept per sample
        self.reset()

    def reset(self) -> None:
        """Forget everything (e.g. after a long outage or a market halt)."""
        self._origin_s: float | None = None  # grid point k is at origin + k·interval
        self._next_k = 1  # index of the next grid point to sample
        self._last_now_s = 0.0
        self._last_mid = 0.0  # mid in force since the last update
        self._sampled_log_mid = 0.0  # log mid at the last grid point
        self._ewma_sq = 0.0  # EWMA of r², not yet divided by the weight
        self._weight = 0.0  # total EWMA weight (bias correction for the zero start)
        self.samples = 0
        self._sigma: float | None = None  # `sigma` once warm, until the next sample

    def update(self, now_s: float, mid: float) -> None:
        if not (mid > 0 and math.isfinite(mid)):
            raise ValueError(f"mid must be a positive finite number, got {mid!r}")
        if self._origin_s is None:
            self._origin_s = self._last_now_s = now_s
            self._last_mid = mid
            self._sampled_log_mid = math.log(mid)
            return
        if now_s < self._last_now_s:
            now_s = self._last_now_s  # a stale timestamp samples nothing; the mid still counts
        self._last_now_s = now_s
        # Grid points are indexed, not accumulated, and "on the grid" allows for float
        # rounding, so the same prices on a rescaled clock take the same samples.
        position = (now_s - self._origin_s) / self.interval_s
        last_k = math.floor(position + _GRID_EPS)
        if last_k >= self._next_k:
            # Grid points strictly before now saw the previous mid; one exactly at now sees
            # the new one. So the first return carries the move since the last grid point,
            # the ones in between are zero, and a grid point at now carries the new move.
            passed = last_k - self._next_k + 1
            at_now = position - last_k < _GRID_EPS
            if passed == 1:
                self._add_return(math.log(mid if at_now else self._last_mid))
            else:
                self._add_return(math.log(self._last_mid))
                zeros = passed - 2 if at_now else passed - 1
                if zeros:
                    self._add_zero_returns(zeros)
                if at_now:
                    self._add_return(math.log(mid))
            self._next_k = last_k + 1
        self._last_mid = mid

    def _add_return(self, log_mid: float) -> None:
        r = log_mid - self._sampled_log_mid
        self._sampled_log_mid = log_mid
        lam = self._decay
        self._ewma_sq = lam * self._ewma_sq + (1.0 - lam) * r * r
        self._weight = lam * self._weight + (1.0 - lam)
        self.samples += 1
        self._sigma = None

    def _add_zero_returns(self, count: int) -> None:
        kept = self._decay**count
        self._ewma_sq *= kept
        self._weight = kept * self._weight + (1.0 - kept)
        self.samples += count
        self._sigma = None

    @property
    def sigma(self) -> float | None:
        """σ of log price per √second, or the prior (None by default) while warming up."""
        if self._sigma is not None:
            return self._sigma  # read on every book update, changes once an interval
        if self.samples < self.min_samples or self._weight <= 0.0:
            return self.prior_sigma
        self._sigma = math.sqrt(self._ewma_sq / self._weight / self.interval_s)
        return self._sigma

    @property
    def warm(self) -> bool:
        return self.samples >= self.min_samples

    def sigma_price(self, mid: float) -> float | None:
        """σ in price units per √second at this mid."""
        sigma = self.sigma
        return None if sigma is None else sigma * mid

    def sigma_over(self, horizon_s: float) -> float | None:
        """Relative σ over a horizon: σ·√horizon."""
        sigma = self.sigma
        return None if sigma is None else sigma * math.sqrt(horizon_s)
