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
import trio
from loguru import logger

from extmm.cli import main as cli_main
from extmm.config import parse_config
from extmm.domain.calibration import (
    Calibration,
    OnlineCalibrator,
    aggressor_depths,
    censoring_depth,
    fit_intensity,
    model_snippets,
    observe_records,
    sigma_from_mids,
)
from extmm.markets import spec_from_market
from extmm.research.record import record_synthetic
from extmm.sim.recording import read_recording

MARKETS = ("BTC-USD", "ETH-USD")
WINDOW_S = 600.0  # online recalibration window of the bot tests


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
    with pytest.raises(SystemExit) as missing:  # an operator mistake: argparse, one line, exit 2
        cli_main(["calibrate", "--input", str(tmp_path / "missing.ndjson.gz")])
    assert missing.value.code == 2 and "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.ndjson.gz"
    junk.write_bytes(b"not gzip at all")
    assert cli_main(["calibrate", "--input", str(junk)]) == 1
    assert "not a gzip recording" in capsys.readouterr().err
    path, _ = synthetic_recording
    assert cli_main(["calibrate", "--input", str(path), "--markets", "SOL-USD"]) == 2
    assert "SOL-USD" in capsys.readouterr().err


def test_the_estimators_are_pure_enough_for_the_quoter():
    # The Quoter may run them online: no I/O, no clock, no event loop, transitively.
    from tests.unit.test_purity import PACKAGE, scan

    assert scan([PACKAGE / "domain" / "calibration.py", PACKAGE / "domain" / "l2.py"]) == {}
    assert scan([PACKAGE / "research" / "record.py"])  # the check does see impurity


# -- online, in the Quoter -----------------------------------------------------------------------


def _recalibrating_config(recalibrate: bool):
    from tests.botharness import test_config

    model = {"type": "glft", "gamma": 0.002, "A": 0.2, "k": 0.01}  # deliberately far from the truth
    model |= {"recalibrate": True, "recalibrate_window_s": WINDOW_S} if recalibrate else {}
    return test_config(
        markets=[
            {"name": "BTC-USD", "quote_notional_cap_usd": 50, "replace_threshold_bps": 2,
             "min_order_size": 0.0001, "model": model},
            {"name": "ETH-USD", "quote_notional_cap_usd": 50, "replace_threshold_bps": 2,
             "min_order_size": 0.01, "model": model},
        ]
    )


async def test_the_quoter_recalibrates_online_to_the_simulators_truth(autojump_clock):
    from extmm.ops.telemetry import QuoteStats
    from tests.botharness import running_bot

    logger.disable("")
    try:
        async with running_bot(_recalibrating_config(True), seed=5) as bot:
            assert bot.runner.statistics()["subscriptions"]["trades"] == 2  # one per market
            await trio.sleep(WINDOW_S)  # the window, full
            sent_before = {m: bot.orders_sent(m) for m in MARKETS}
            await trio.sleep(60.0)
            for market in MARKETS:
                stats = bot.root.view.get(market, QuoteStats)
                est, true = stats.estimate, bot.engine.flow_params(market)
                assert est is not None and est.covered_s == pytest.approx(WINDOW_S, abs=1.0), market
                assert trio.current_time() - est.at <= 1.5  # estimated about once a second
                assert est.sigma == pytest.approx(true.sigma, rel=0.25), market
                assert est.A == pytest.approx(true.taker_rate, rel=0.25), market
                assert est.k == pytest.approx(true.k, rel=0.25), market
                assert est.sigma_rel == pytest.approx(est.sigma / bot.engine.mid(market), rel=0.05)
                # Quoting goes on, with the estimates.
                assert (stats.bid or stats.ask) is not None and stats.model == "glft"  # (size skew: may be one-sided)
                assert bot.orders_sent(market) > sent_before[market]
    finally:
        logger.enable("")


async def test_without_recalibration_there_is_no_trades_stream_and_no_estimate(autojump_clock):
    from extmm.ops.telemetry import QuoteStats
    from tests.botharness import running_bot

    logger.disable("")
    try:
        async with running_bot(_recalibrating_config(False), seed=5) as bot:
            await trio.sleep(90.0)
            assert "trades" not in bot.runner.statistics()["subscriptions"]
            for market in MARKETS:
                stats = bot.root.view.get(market, QuoteStats)
                assert stats.estimate is None and stats.bid is not None
    finally:
        logger.enable("")


def test_recalibration_replaces_a_k_and_sigma_once_warm():
    from actors.messages import TopOfBook, TradePrints
    from actors.quoter import Recalibration

    cfg = _recalibrating_config(True).markets[0]
    spec = spec_from_market(__import__("extmm.markets", fromlist=["x"]).bundled_markets()["BTC-USD"])
    recal = Recalibration(spec, cfg, every_s=1.0, warmup_s=60.0)
    rng = random.Random(8)
    mid, tick = 80_000.0, float(spec.tick_size)
    for step in range(1200):  # 120 s of 100 ms frames; aggressors reach Exp(k = 0.1) depths
        t = step * 0.1
        mid += 2.0 * rng.gauss(0.0, 1.0)
        ticks = round(mid / tick)
        recal.on_top(
            TopOfBook(market="BTC-USD", bid_ticks=ticks - 1, bid_lots=1, ask_ticks=ticks + 1, ask_lots=1,
                      mid=ticks * tick, sigma=None, valid=True, updated_at=t, seq=step)
        )
        if rng.random() < 0.2:
            buy = rng.random() < 0.5
            depth = rng.expovariate(0.1)
            price = ticks * tick + (depth if buy else -depth)
            recal.on_prints(TradePrints(prints=((buy, round(price / tick)),), mid=ticks * tick,
                                        touch_ticks=1.0, at=t))
        recal.refresh(t)
        if t < 59.0:
            assert recal.estimate is None and recal.market is cfg and recal.sigma_rel is None
    est = recal.estimate
    assert est is not None and est.at == pytest.approx(119.0) and est.covered_s > 110  # once a second
    assert recal.market.model.A == est.A and recal.market.model.k == est.k
    assert recal.market.model.gamma == cfg.model.gamma and recal.market.model.type == "glft"
    assert recal.sigma_rel == est.sigma_rel
    assert est.k == pytest.approx(0.1, rel=0.3) and est.sigma == pytest.approx(2.0 / math.sqrt(0.1), rel=0.3)


async def test_the_book_forwards_prints_with_the_book_they_hit():
    from actors.book import book_actor
    from actors.messages import BookFrame, PublicTrades, TradePrints
    from extmm.markets import bundled_markets
    from extmm.ops.telemetry import Telemetry

    spec = spec_from_market(bundled_markets()["BTC-USD"])

    def trades(*prints):
        return PublicTrades(data=list(prints), exchange_ts_ms=1, received_at=5.0)

    snapshot = {"t": "SNAPSHOT", "m": "BTC-USD", "b": [{"p": "99", "q": "1"}], "a": [{"p": "103", "q": "1"}]}
    inbox = [
        trades({"S": "BUY", "p": "103", "q": "0.1"}),  # no book yet: nothing to measure against
        BookFrame(type="SNAPSHOT", data=snapshot, seq=1, exchange_ts_ms=1, received_at=1.0),
        trades({"S": "BUY", "p": "103", "q": "0.1"}, {"S": "SELL", "p": "98", "q": "0.2"}),
        trades({"S": "SIDEWAYS", "p": "103", "q": "0.1"}),  # malformed frames are skipped...
        trades({"S": "BUY", "p": "103.5", "q": "0.1"}),  # (off the 1 USD tick)
        PublicTrades(data={"not": "a list"}, exchange_ts_ms=1, received_at=5.0),
        trades(),  # ... and an empty one is nothing
    ]
    send_in, recv_in = trio.open_memory_channel(len(inbox))
    to_quoter, from_book = trio.open_memory_channel(100)
    to_account, _ = trio.open_memory_channel(100)
    control, _control = trio.open_memory_channel(1)
    for msg in inbox:
        send_in.send_nowait(msg)
    send_in.close()
    logger.disable("")
    try:
        await book_actor(spec=spec, inbox=recv_in, to_quoter=to_quoter, to_account=to_account,
                         feed_control=control, telemetry=Telemetry.disabled())
    finally:
        logger.enable("")
    forwarded = [m for m in _drain(from_book) if isinstance(m, TradePrints)]
    assert forwarded == [TradePrints(prints=((True, 103), (False, 98)), mid=101.0, touch_ticks=2.0, at=5.0)]


def _drain(channel):
    out = []
    while True:
        try:
            out.append(channel.receive_nowait())
        except trio.WouldBlock:
            return out


def test_the_estimates_reach_the_dashboard():
    import io
    from decimal import Decimal

    import attrs
    from rich.console import Console

    from extmm.ops.dashboard_render import render
    from extmm.ops.status import MarketStatus, example_status
    from extmm.ops.telemetry import ModelEstimate, QuoteStats, TelemetryView

    view = TelemetryView()
    estimate = ModelEstimate(sigma=7.1, sigma_rel=8.5e-5, A=1.02, k=0.119, covered_s=600.0, at=1.0)
    view.update(QuoteStats(market="BTC-USD", bid=Decimal(1), bid_qty=Decimal(1), ask=None, ask_qty=None,
                           model="glft", reasons=(), at=1.0, estimate=estimate))
    market = MarketStatus.from_telemetry("BTC-USD", view, state="ACTIVE", now=1.0)
    assert market.recalibrated == "recal σ 7.1 A 1.02 k 0.119 (600s)"
    status = example_status()
    status = attrs.evolve(status, markets=(attrs.evolve(status.markets[0], recalibrated=market.recalibrated),))
    console = Console(width=100, record=True, file=io.StringIO(), force_terminal=True)
    console.print(render(status))
    assert "recal σ 7.1 A 1.02 k 0.119" in console.export_text()
    assert MarketStatus.from_telemetry("BTC-USD", TelemetryView(), state="ACTIVE", now=1.0).recalibrated is None
