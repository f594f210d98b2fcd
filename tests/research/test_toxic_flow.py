"""The `toxic` flow preset (#16): informed takers, sweeps, jumps, regimes, clustered arrivals."""

from __future__ import annotations

import random
import statistics

import pytest

from extmm.config import parse_config
from extmm.markets import bundled_markets, bundled_spec
from extmm.research.backtest.options import BacktestOptions
from extmm.research.backtest.run import backtest
from extmm.sim.flow import FLOW_PRESETS, FlowParams, MarketFlow

BTC = bundled_markets()["BTC-USD"]


def _flow(preset: str, seed: int = 3) -> MarketFlow:
    return MarketFlow(FlowParams.for_market(BTC, preset=preset), bundled_spec("BTC-USD"), random.Random(seed))


def test_default_preset_is_todays_flow():
    assert FLOW_PRESETS["default"] == {}
    assert FlowParams.for_market(BTC, preset="default") == FlowParams.for_market(BTC)
    assert not FlowParams.for_market(BTC).informed
    with pytest.raises(ValueError, match="unknown flow preset"):
        FlowParams.for_market(BTC, preset="nasty")


def test_toxic_informed_takers_predict_the_next_move():
    flow = _flow("toxic")
    dt = 0.1
    mids, takes = [], []
    for step in range(20_000):  # 2000 s
        flow.diffuse(dt)
        before = flow.informed_takes
        gap = flow.fair - flow.mid
        flow.takers(dt)
        if flow.informed_takes > before:
            takes.append((step, 1 if gap > 0 else -1))
        mids.append(flow.mid)
    horizon = 50  # 5 s
    moves = [sign * (mids[i + horizon] - mids[i]) / mids[i] * 1e4 for i, sign in takes if i + horizon < len(mids)]
    assert len(moves) > 500
    # An informed buy is followed by a rise (a sell by a fall): the mid moves their way.
    assert statistics.mean(moves) > 0.5  # bps over 5 s
    assert flow.jumps > 50


def test_toxic_arrivals_cluster():
    def counts(preset: str) -> list[int]:
        flow = _flow(preset)
        out = []
        for _ in range(600):  # 1 s windows over 10 min
            n = 0
            for _ in range(10):
                flow.diffuse(0.1)
                n += len(flow.takers(0.1))
            out.append(n)
        return out

    toxic = counts("toxic")
    # Self-excited arrivals: over-dispersed (variance well above the mean, as Poisson is not).
    assert statistics.variance(toxic) > 1.5 * statistics.mean(toxic)
    default = counts("default")
    assert statistics.variance(default) < 1.3 * statistics.mean(default)


CFG = parse_config({
    "markets": [{"name": "BTC-USD", "k": 0.0001, "alpha": 0.2, "beta": 0.25, "base_spread": 0.0002,
                 "quote_notional_cap_usd": 50, "replace_threshold_bps": 2, "min_order_size": 0.0001}],
})


def test_todays_default_strategy_is_adversely_selected_on_toxic_flow():
    """What real data shows: negative 10 s markouts, most fills from sweeps; the default
    flow shows the opposite markout for the same strategy and seed."""
    opts = dict(hours=0.1, seed=1, order_latency_ms=20.0, sample_s=1.0)
    toxic = backtest(CFG, BacktestOptions(flow="toxic", **opts)).to_json(wall_seconds=1.0)
    kind = backtest(CFG, BacktestOptions(flow="default", **opts)).to_json(wall_seconds=1.0)
    reasons = toxic["fills_by_reason"]
    assert toxic["fills"] > 50
    assert reasons.get("sweep", 0) > 0.5 * sum(reasons.values())
    assert toxic["markouts"]["mean_bps"]["10s"] < 0
    assert kind["markouts"]["mean_bps"]["10s"] > 0
    assert toxic["pnl"]["net"] < kind["pnl"]["net"]
