"""EWMA volatility: recovers a known σ from GBM paths, is invariant to the time unit,
samples several elapsed intervals at once, and warms up before it reports."""

from __future__ import annotations

import math
import random

import pytest

from extmm.domain.volatility import EwmaVolatility

SIGMA = 2e-4  # relative, per √s (≈ 112 % a year): a lively crypto market


def gbm_path(
    seed: int, duration_s: float, sigma: float, times: list[float] | None = None, step_s: float = 0.25
):
    """(t, mid) of a driftless GBM, observed at `times` (default: every `step_s`)."""
    rng = random.Random(seed)
    if times is None:
        times = [i * step_s for i in range(int(duration_s / step_s) + 1)]
    mid, last_t, path = 84_000.0, times[0], []
    for t in times:
        dt = t - last_t
        if dt > 0:
            mid *= math.exp(-0.5 * sigma * sigma * dt + sigma * math.sqrt(dt) * rng.gauss(0.0, 1.0))
        path.append((t, mid))
        last_t = t
    return path


def run(est: EwmaVolatility, path: list[tuple[float, float]], time_scale: float = 1.0) -> EwmaVolatility:
    for t, mid in path:
        est.update(t * time_scale, mid)
    return est


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_recovers_sigma_of_a_regularly_observed_gbm(seed: int) -> None:
    est = run(EwmaVolatility(interval_s=1.0, half_life_s=600.0), gbm_path(seed, 3600.0, SIGMA))
    assert est.sigma == pytest.approx(SIGMA, rel=0.1)
    assert est.sigma_price(84_000.0) == pytest.approx(est.sigma * 84_000.0)
    assert est.sigma_over(60.0) == pytest.approx(est.sigma * math.sqrt(60.0))


@pytest.mark.parametrize("seed", [4, 5])
def test_recovers_sigma_from_irregular_updates(seed: int) -> None:
    rng = random.Random(seed)
    times, t = [0.0], 0.0
    while t < 3600.0:
        # Bursts and lulls: many updates within one interval, or none for several.
        t += rng.expovariate(1 / 0.05) if rng.random() < 0.7 else rng.expovariate(1 / 3.0)
        times.append(t)
    est = run(EwmaVolatility(interval_s=1.0, half_life_s=600.0), gbm_path(seed, 3600.0, SIGMA, times))
    assert est.sigma == pytest.approx(SIGMA, rel=0.1)


def test_sampling_interval_does_not_change_the_answer() -> None:
    path = gbm_path(7, 7200.0, SIGMA)
    fine = run(EwmaVolatility(interval_s=0.5, half_life_s=900.0), path)
    coarse = run(EwmaVolatility(interval_s=2.0, half_life_s=900.0), path)
    assert fine.sigma == pytest.approx(SIGMA, rel=0.1)
    assert coarse.sigma == pytest.approx(SIGMA, rel=0.15)


@pytest.mark.parametrize("scale", [0.001, 2.0, 60.0])
def test_time_scaling_invariance(scale: float) -> None:
    """The same prices on a clock running `scale` times slower, with interval and half-life
    scaled alike, take the same samples: σ per √s shrinks by exactly √scale."""
    path = gbm_path(11, 1800.0, SIGMA)
    base = run(EwmaVolatility(interval_s=1.0, half_life_s=120.0), path)
    scaled = run(EwmaVolatility(interval_s=scale, half_life_s=120.0 * scale), path, time_scale=scale)
    assert scaled.samples == base.samples
    assert scaled.sigma == pytest.approx(base.sigma / math.sqrt(scale), rel=1e-9)


def test_several_elapsed_intervals_at_once_equal_one_update_per_interval() -> None:
    bulk = EwmaVolatility(interval_s=1.0, half_life_s=30.0, min_samples=1)
    step = EwmaVolatility(interval_s=1.0, half_life_s=30.0, min_samples=1)
    for est in (bulk, step):
        est.update(0.0, 100.0)
        est.update(0.4, 101.0)
    # bulk: one update 7.5 s later; step: the same price seen at every grid point in between.
    bulk.update(7.9, 99.0)
    for t in range(1, 8):
        step.update(float(t), 101.0)
    step.update(7.9, 99.0)
    assert bulk.samples == step.samples == 7
    assert bulk.sigma == pytest.approx(step.sigma, rel=1e-12)
    # Only the first interval carried a move: ln(101/100); the other six were flat.
    lam = 0.5 ** (1.0 / 30.0)
    r = math.log(101.0 / 100.0)
    weights = [(1 - lam) * lam**k for k in range(7)]
    expected = math.sqrt((weights[-1] * r * r) / sum(weights))
    assert bulk.sigma == pytest.approx(expected, rel=1e-12)


def test_a_grid_point_at_the_update_time_sees_the_new_mid() -> None:
    est = EwmaVolatility(interval_s=1.0, half_life_s=10.0, min_samples=1)
    est.update(0.0, 100.0)
    est.update(1.0, 110.0)  # exactly on the grid: this return is ln(110/100)
    assert est.samples == 1
    assert est.sigma == pytest.approx(math.log(1.1), rel=1e-12)
    est.update(3.0, 121.0)  # grid 2 sees 110 (flat), grid 3 sees 121
    assert est.samples == 3


def test_warm_up_reports_none_or_the_prior() -> None:
    cold = EwmaVolatility(interval_s=1.0, half_life_s=60.0, min_samples=5)
    primed = EwmaVolatility(interval_s=1.0, half_life_s=60.0, min_samples=5, prior_sigma=1e-4)
    for est in (cold, primed):
        est.update(0.0, 100.0)
        for t in range(1, 5):
            est.update(float(t), 100.0 + t)
    assert cold.sigma is None and cold.sigma_price(100.0) is None and not cold.warm
    assert primed.sigma == 1e-4 and primed.sigma_price(100.0) == pytest.approx(1e-2)
    for est in (cold, primed):
        est.update(5.0, 106.0)
        assert est.warm and est.sigma is not None and est.sigma != 1e-4
    cold.reset()
    assert cold.sigma is None and cold.samples == 0


def test_constant_mid_has_zero_sigma() -> None:
    est = EwmaVolatility(interval_s=1.0, half_life_s=60.0, min_samples=3)
    for t in range(10):
        est.update(float(t), 500.0)
    assert est.sigma == 0.0


def test_updates_within_one_interval_only_move_the_pending_mid() -> None:
    est = EwmaVolatility(interval_s=1.0, half_life_s=60.0, min_samples=1)
    est.update(0.0, 100.0)
    for i in range(1, 10):
        est.update(i * 0.1, 100.0 + i)  # wild moves inside the first second
    assert est.samples == 0
    est.update(1.05, 100.0)  # grid point 1 saw the last of them: 109
    assert est.samples == 1
    assert est.sigma == pytest.approx(abs(math.log(109.0 / 100.0)), rel=1e-12)


def test_stale_timestamp_samples_nothing() -> None:
    est = EwmaVolatility(interval_s=1.0, half_life_s=60.0, min_samples=1)
    est.update(10.0, 100.0)
    est.update(9.0, 105.0)  # older than the last: no grid point passes, the mid is kept
    assert est.samples == 0
    est.update(11.0, 105.0)
    assert est.sigma == pytest.approx(math.log(1.05), rel=1e-12)


@pytest.mark.parametrize("mid", [0.0, -1.0, math.nan, math.inf])
def test_rejects_a_bad_mid(mid: float) -> None:
    with pytest.raises(ValueError):
        EwmaVolatility().update(0.0, mid)


@pytest.mark.parametrize(
    "kwargs",
    [{"interval_s": 0.0}, {"half_life_s": -1.0}, {"min_samples": 0}, {"prior_sigma": -1e-4}],
)
def test_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EwmaVolatility(**kwargs)  # type: ignore[arg-type]
