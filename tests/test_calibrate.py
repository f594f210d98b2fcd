"""Calibration: σ, A and k recovered from recordings, the pure estimators, and the command.

The simulator's synthetic flow has known parameters (`engine.flow_params(market)`): a
recording of it, made in-process in virtual time with a fixed seed, must give them back
within 20 %.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from loguru import logger

from extmm.calibrate import (
    Calibration,
    OnlineCalibrator,
    aggressor_depths,
    censoring_depth,
    fit_intensity,
    model_snippets,
    observe_records,
    sigma_from_mids,
)
from extmm.cli import main as cli_main
from extmm.config import parse_config
from extmm.markets import spec_from_market
from extmm.record import read_recording, record_synthetic

MARKETS = ("BTC-USD", "ETH-USD")


@pytest.fixture(scope="module")
def synthetic_recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("cal") / "flow.ndjson.gz"
    logger.disable("")
    try:
        _, engine = record_synthetic(
            path, markets=list(MARKETS), seconds=900, seed=1, kinds=("orderbook", "trades")
        )
    finally:
        logger.enable("")
    return path, {m: engine.flow_params(m) for m in MARKETS}


def test_recovers_the_simulators_sigma_a_and_k_within_20_percent(synthetic_recording):
    path, truth = synthetic_recording
    reader = read_recording([path])
    observers = observe_records(reader, {m: spec_from_market(reader.markets[m]) for m in MARKETS})
    for market in MARKETS:
        cal = observers[market].calibrate()
        true = truth[market]
        assert cal.sigma == pytest.approx(true.sigma, rel=0.2), market
        assert cal.A == pytest.approx(true.taker_rate, rel=0.2), market
        assert cal.k == pytest.approx(true.k, rel=0.2), market
        assert cal.fit.r2 > 0.95
        assert cal.sigma_rel == pytest.approx(cal.sigma / cal.mid)


def test_fit_intensity_recovers_an_exact_exponential():
    rng = random.Random(3)
    a, k, duration = 2.0, 0.5, 5_000.0
    # Per side, aggressors arrive at rate a and reach Exp(k) depths: 2·a·T of them in all.
    depths = [rng.expovariate(k) for _ in range(int(2 * a * duration))]
    fit = fit_intensity(depths, duration, min_count=20)
    assert fit.k == pytest.approx(k, rel=0.05)
    assert fit.A == pytest.approx(a, rel=0.05)
    assert fit.rates[0] > fit.rates[-1]


def test_depths_near_the_touch_are_kept_out_of_the_fit():
    rng = random.Random(4)
    a, k, duration, tick = 1.0, 5.0, 20_000.0, 0.1
    depths = []
    for _ in range(int(2 * a * duration)):
        level = math.floor(rng.expovariate(k) / tick + 1e-9) * tick  # the deepest level reached
        if level >= tick:  # short of the touch: no print at all
            depths.append(level + rng.gauss(0.0, 0.07))  # measured from a mid that moved meanwhile
    naive = fit_intensity(depths, duration)
    censored = fit_intensity(depths, duration, min_depth=censoring_depth([tick] * 10, tick))
    assert censored.k == pytest.approx(k, rel=0.05)
    assert abs(naive.k - k) > 0.08 * k  # the blurred, censored touch flattens the curve
    assert fit_intensity([], 10.0) is None
    assert fit_intensity([1.0, 2.0], 0.0) is None


def test_sigma_from_a_random_walk():
    rng = random.Random(5)
    sigma, dt = 3.0, 0.1
    t, mid, times, mids = 0.0, 1000.0, [], []
    for _ in range(60_000):
        t += dt
        mid += sigma * math.sqrt(dt) * rng.gauss(0.0, 1.0)
        times.append(t)
        mids.append(mid)
    assert sigma_from_mids(times, mids, interval_s=1.0) == pytest.approx(sigma, rel=0.03)
    assert sigma_from_mids(times[:5], mids[:5]) is None


def test_aggressor_depths_take_the_deepest_print_per_side():
    prints = [(True, 101.0), (True, 103.0), (False, 98.0), (False, 99.5)]
    assert sorted(aggressor_depths(100.0, prints)) == [2.0, 3.0]
    assert aggressor_depths(100.0, [(True, 99.0)]) == [0.0]  # a stale mid never gives a negative depth


def test_online_calibrator_forgets_what_left_the_window():
    rng = random.Random(6)
    cal = OnlineCalibrator("X", window_s=600.0)
    assert cal.estimate(0.0) is None
    mid = 100.0
    for second in range(1800):
        sigma = 0.05 if second < 1200 else 0.2  # a regime change 10 minutes before the end
        mid += sigma * rng.gauss(0.0, 1.0)
        cal.on_mid(float(second), mid)
        for _ in range(2):
            if rng.random() < 0.8:
                cal.on_aggressor(float(second), rng.expovariate(10.0))
    est = cal.estimate(1799.0)
    assert est.sigma == pytest.approx(0.2, rel=0.15)
    assert est.k == pytest.approx(10.0, rel=0.25)
    assert est.A == pytest.approx(0.8, rel=0.25)
    assert est.duration_s == pytest.approx(600.0, abs=1.0)


def test_snippets_are_valid_model_configs(synthetic_recording):
    path, _ = synthetic_recording
    reader = read_recording([path])
    cal = observe_records(reader, {"BTC-USD": spec_from_market(reader.markets["BTC-USD"])})[
        "BTC-USD"
    ].calibrate()
    snippets = model_snippets(cal, gamma=0.01)
    for name, model in snippets.items():
        cfg = parse_config({"markets": [{"name": "BTC-USD", "model": model}]})
        assert cfg.markets[0].model.type == name
        assert cfg.markets[0].model.k == pytest.approx(cal.k, rel=1e-5)
    assert snippets["glft"]["A"] == pytest.approx(cal.A, rel=1e-5)
    empty = Calibration(
        market="X", sigma=None, sigma_rel=None, mid=None, duration_s=0.0, mid_samples=0, fit=None
    )
    assert model_snippets(empty) == {}


@pytest.fixture
def keep_log_sinks(monkeypatch):
    import extmm.ops.logs

    monkeypatch.setattr(extmm.ops.logs, "configure_logging", lambda **_: None)


def test_calibrate_command_prints_estimates_and_snippets(synthetic_recording, capsys, keep_log_sinks):
    path, truth = synthetic_recording
    assert cli_main(["calibrate", "--input", str(path), "--markets", "ETH-USD", "--gamma", "0.005"]) == 0
    out = json.loads(capsys.readouterr().out)
    eth = out["markets"]["ETH-USD"]
    assert list(out["markets"]) == ["ETH-USD"]
    assert eth["k"] == pytest.approx(truth["ETH-USD"].k, rel=0.2)
    assert eth["model"]["glft"]["gamma"] == 0.005
    assert eth["model"]["avellaneda_stoikov"]["k"] == pytest.approx(eth["k"], rel=1e-5)


def test_calibrate_command_explains_bad_input(tmp_path, capsys, keep_log_sinks, synthetic_recording):
    assert cli_main(["calibrate", "--input", str(tmp_path / "missing.ndjson.gz")]) == 1
    assert "no such recording" in capsys.readouterr().err
    junk = tmp_path / "junk.ndjson.gz"
    junk.write_bytes(b"not gzip at all")
    assert cli_main(["calibrate", "--input", str(junk)]) == 1
    assert "not a gzip recording" in capsys.readouterr().err
    path, _ = synthetic_recording
    assert cli_main(["calibrate", "--input", str(path), "--markets", "SOL-USD"]) == 2
    assert "SOL-USD" in capsys.readouterr().err


def test_the_estimators_are_pure_enough_for_the_quoter():
    # The Quoter may run them online: no I/O, no clock, no event loop, transitively.
    from tests.test_purity import PACKAGE, scan

    assert scan([PACKAGE / "calibrate.py", PACKAGE / "backtest" / "l2.py"]) == {}
    assert scan([PACKAGE / "record.py"])  # the check does see impurity
