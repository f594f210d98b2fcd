"""The pure core reads its parameters through `extmm.domain.params` Protocols, not the config.

Checks that the config's classes still provide every field a Protocol names, and that the
quote model, risk rules and guards run on plain objects holding ONLY those fields (so the
Protocols list exactly what is read) and give the same answers as with the config classes.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from extmm.config import GuardsConfig, MarketConfig, ModelConfig, RiskConfig
from extmm.domain.guards import QuoteGuards
from extmm.domain.params import GuardParams, ModelParams, QuoteParams, RiskLimits
from extmm.domain.quoting import QuoteIntent, compute_quote
from extmm.domain.risk import RiskSnapshot, clamp_intent
from extmm.domain.units import Side
from extmm.markets import bundled_spec

ROOT = Path(__file__).resolve().parents[2]
ETH = bundled_spec("ETH-USD")


def fields(protocol: type) -> list[str]:
    return sorted(name for name, value in vars(protocol).items() if isinstance(value, property))


def only(protocol: type, source: Any, **nested: Any) -> SimpleNamespace:
    """A plain object with exactly the Protocol's fields, copied from `source`."""
    values = {name: getattr(source, name) for name in fields(protocol)}
    return SimpleNamespace(**{**values, **nested})


@pytest.mark.parametrize(
    "protocol, config",
    [(ModelParams, ModelConfig()), (QuoteParams, MarketConfig(name="ETH-USD")),
     (RiskLimits, RiskConfig()), (GuardParams, GuardsConfig())],
)
def test_config_classes_provide_every_protocol_field(protocol, config):
    names = fields(protocol)
    assert names, f"{protocol.__name__} declares no fields"
    missing = [name for name in names if not hasattr(config, name)]
    assert not missing, f"{type(config).__name__} lacks {missing}"


@pytest.mark.parametrize("model", ["seed", "avellaneda_stoikov", "glft"])
def test_compute_quote_runs_on_plain_parameters(model):
    market = MarketConfig(
        name="ETH-USD", model=ModelConfig(type=model, k=0.02), levels=3, level_spacing_bps=4.0,
        inventory_target_usd=30.0, quote_notional_cap_usd=100.0,
    )
    plain = only(QuoteParams, market, model=only(ModelParams, market.model))
    kwargs = dict(spec=ETH, best_bid_ticks=19_990, best_ask_ticks=20_010, mid=2000.0, sigma=2e-4,
                  inventory_lots=20, funding_rate=1e-4, maker_fee_rate=-5e-5)
    expected = compute_quote(market=market, **kwargs)
    assert expected.bid_lots and expected.ask_lots and len(expected.more_bids) == 2
    assert compute_quote(market=plain, **kwargs) == expected


def test_clamp_intent_runs_on_plain_limits():
    limits = RiskConfig(max_net_position_usd=100.0, max_open_orders=3, max_total_net_position_usd=150.0)
    intent = QuoteIntent(market="ETH-USD", bid_ticks=19_990, bid_lots=40, ask_ticks=20_010, ask_lots=40)
    snapshot = RiskSnapshot(mid=2000.0, position_lots=20, balance_usd=500.0, book_age_ms=10.0,
                            other_markets_usd=90.0)
    expected = clamp_intent(intent, spec=ETH, limits=limits, snapshot=snapshot)
    assert expected.reasons  # the total limit binds: the test exercises the limits
    assert clamp_intent(intent, spec=ETH, limits=only(RiskLimits, limits), snapshot=snapshot) == expected


def test_guards_run_on_plain_parameters():
    cfg = GuardsConfig(fill_cooldown_ms=500, sweep_window_ms=1000, markout_widen_bps=1.0,
                       markout_horizon_s=1.0, vol_window_ms=1000)
    intent = QuoteIntent(market="ETH-USD", bid_ticks=19_990, bid_lots=40, ask_ticks=20_010, ask_lots=40)
    outputs = []
    for params in (cfg, only(GuardParams, cfg)):
        guards = QuoteGuards(params, ETH)
        guards.on_quote(intent)
        guards.on_fill(0.0, Side.BUY, 19_990)
        guards.on_top(0.1, 19_900, 19_920, 1991.0)
        guards.on_top(2.0, 19_850, 19_870, 1986.0)
        outputs.append((guards.apply(intent, 0.2, 1991.0), guards.apply(intent, 2.5, 1986.0), guards.sweeps))
    assert outputs[0][0][1]  # something fired, so the fields were read
    assert outputs[0] == outputs[1]


def test_pure_core_does_not_import_the_config_schema():
    offenders = []
    for path in sorted((ROOT / "extmm" / "domain").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n == "extmm.config" or n.startswith("extmm.config.")]
    assert not offenders
