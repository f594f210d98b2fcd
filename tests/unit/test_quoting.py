"""Quote models and the integer quote: formulas against hand values, skew and funding
signs, and grid/touch properties of `compute_quote` over random inputs."""

from __future__ import annotations

import math
from decimal import Decimal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extmm.config import MarketConfig, ModelConfig
from extmm.domain.quoting import (
    QuoteIntent,
    avellaneda_stoikov,
    compute_quote,
    default_intensity_k,
    funding_shift,
    glft,
    glft_coefficients,
    min_quote_lots,
    seed,
    skewed_sizes,
)
from extmm.markets import bundled_spec

ETH = bundled_spec("ETH-USD")  # tick 0.1, lot 0.001, min 0.01
BTC = bundled_spec("BTC-USD")  # tick 1, lot 0.00001, min 0.0001
ETH_SMALL_MIN = attrs.evolve(ETH, min_order_size=Decimal("0.001"))


def eth_market(**overrides) -> MarketConfig:
    model = overrides.pop("model", ModelConfig())
    return MarketConfig(name="ETH-USD", model=model, **overrides)


# -- Avellaneda–Stoikov -------------------------------------------------------------------


def test_avellaneda_stoikov_hand_values():
    # r = 100 − 2·0.1·2²·1 = 99.2; spread = 0.1·4·1 + (2/0.1)·ln(16/15) = 0.4 + 1.2907704 = 1.6907704
    quote = avellaneda_stoikov(mid=100.0, inventory=2.0, gamma=0.1, sigma=2.0, k=1.5, time_left=1.0)
    assert quote.reservation == pytest.approx(99.2, abs=1e-12)
    assert quote.half_spread == pytest.approx(0.8453852, abs=1e-6)
    assert quote.bid == pytest.approx(98.3546148, abs=1e-6)
    assert quote.ask == pytest.approx(100.0453852, abs=1e-6)


def test_avellaneda_stoikov_gamma_to_zero_is_continuous():
    at_zero = avellaneda_stoikov(mid=50.0, inventory=3.0, gamma=0.0, sigma=1.0, k=4.0, time_left=10.0)
    assert at_zero.reservation == 50.0
    assert at_zero.half_spread == pytest.approx(1 / 4.0)  # (2/γ)ln(1+γ/k) → 2/k
    tiny = avellaneda_stoikov(mid=50.0, inventory=3.0, gamma=1e-9, sigma=1.0, k=4.0, time_left=10.0)
    assert tiny.half_spread == pytest.approx(at_zero.half_spread, rel=1e-7)


@pytest.mark.parametrize(
    "params",
    [dict(gamma=-0.1), dict(k=0.0), dict(sigma=math.nan), dict(time_left=-1.0), dict(mid=math.inf)],
)
def test_avellaneda_stoikov_rejects_bad_parameters(params):
    args = dict(mid=100.0, inventory=0.0, gamma=0.1, sigma=1.0, k=1.0, time_left=1.0) | params
    with pytest.raises(ValueError, match=next(iter(params))):
        avellaneda_stoikov(**args)


# -- GLFT -------------------------------------------------------------------------------


def test_glft_hand_values():
    # c1 = ln(16/15)/0.1 = 0.6453852; c2 = sqrt(0.1/(2·140·1.5) · (16/15)^16) = sqrt(0.1/420 · 2.8084040) = 0.0258586
    coeff = glft_coefficients(gamma=0.1, A=140.0, k=1.5, xi=0.1, delta=1.0)
    assert coeff.c1 == pytest.approx(0.6453852, abs=1e-7)
    assert coeff.c2 == pytest.approx(0.0258586, abs=1e-7)
    quote = glft(mid=100.0, inventory=3.0, gamma=0.1, sigma=2.0, A=140.0, k=1.5)
    # δ_b = c1 + (2q+Δ)/2·σ·c2 = 0.6453852 + 3.5·2·0.0258586; δ_a = c1 − (2q−Δ)/2·σ·c2
    assert quote.bid == pytest.approx(100.0 - (0.6453852 + 7.0 * 0.0258586), abs=1e-6)
    assert quote.ask == pytest.approx(100.0 + (0.6453852 - 5.0 * 0.0258586), abs=1e-6)
    assert quote.half_spread == pytest.approx(0.6453852 + 0.0258586, abs=1e-6)


@given(
    q=st.floats(-20, 20),
    gamma=st.floats(1e-4, 10),
    xi=st.floats(1e-4, 10),
    sigma=st.floats(0, 50),
    A=st.floats(0.01, 500),
    k=st.floats(0.01, 50),
    delta=st.floats(0.1, 5),
)
def test_glft_matches_gueant_equations_4_6_and_4_7(q, gamma, xi, sigma, A, k, delta):  # noqa: N803
    # The paper's form, written independently of the c1/c2 factorisation.
    root = math.sqrt(gamma * sigma**2 / (2 * A * delta * k) * (1 + xi * delta / k) ** (k / (xi * delta) + 1))
    base = 1 / (xi * delta) * math.log(1 + xi * delta / k)
    bid_depth = base + (2 * q + delta) / 2 * root
    ask_depth = base - (2 * q - delta) / 2 * root
    quote = glft(mid=1000.0, inventory=q, gamma=gamma, sigma=sigma, A=A, k=k, xi=xi, delta=delta)
    assert 1000.0 - quote.bid == pytest.approx(bid_depth, rel=1e-9, abs=1e-9)
    assert quote.ask - 1000.0 == pytest.approx(ask_depth, rel=1e-9, abs=1e-9)


def test_glft_xi_defaults_to_gamma():
    args = dict(mid=100.0, inventory=2.0, gamma=0.3, sigma=1.5, A=20.0, k=2.0)
    assert glft(**args) == glft(**args, xi=0.3)
    assert glft(**args) != glft(**args, xi=0.6)


def test_glft_xi_to_zero_limit():
    at_zero = glft_coefficients(gamma=0.2, A=10.0, k=3.0, xi=0.0, delta=1.0)
    assert at_zero.c1 == pytest.approx(1 / 3.0, rel=1e-12)
    assert at_zero.c2 == pytest.approx(math.sqrt(0.2 * math.e / (2 * 10.0 * 1.0 * 3.0)), rel=1e-12)
    for xi in (1e-12, 1e-9, 1e-7):
        near = glft_coefficients(gamma=0.2, A=10.0, k=3.0, xi=xi, delta=1.0)
        assert near.c1 == pytest.approx(at_zero.c1, rel=1e-6)
        assert near.c2 == pytest.approx(at_zero.c2, rel=1e-6)
    # Both sides of the series/direct switch agree.
    below = glft_coefficients(gamma=0.2, A=10.0, k=3.0, xi=2.9e-6, delta=1.0)
    above = glft_coefficients(gamma=0.2, A=10.0, k=3.0, xi=3.1e-6, delta=1.0)
    assert below.c1 == pytest.approx(above.c1, rel=1e-6)
    assert below.c2 == pytest.approx(above.c2, rel=1e-6)


# -- seed -------------------------------------------------------------------------------


def test_seed_hand_values():
    # fair = 2000·(1 − 0.0005·2) = 1998; half = 0.001 + 0.5·1e-4·√100 + 0.25·|−0.0002| = 0.00155
    quote = seed(
        mid=2000.0, inventory=2.0, sigma=1e-4, k=0.0005, base_spread=0.001, alpha=0.5, beta=0.25,
        funding_carry=-0.0002, horizon=100.0,
    )
    assert quote.reservation == pytest.approx(1998.0)
    assert quote.half_spread == pytest.approx(1998.0 * 0.00155)
    assert quote.bid == pytest.approx(1998.0 * (1 - 0.00155))
    assert quote.ask == pytest.approx(1998.0 * (1 + 0.00155))


# -- skew direction (all models) --------------------------------------------------------

MODELS = {
    "seed": lambda q: seed(mid=100.0, inventory=q, sigma=1e-3, k=0.001, base_spread=0.001, alpha=0.5, beta=0.25),
    "avellaneda_stoikov": lambda q: avellaneda_stoikov(
        mid=100.0, inventory=q, gamma=0.1, sigma=0.5, k=2.0, time_left=60.0
    ),
    "glft": lambda q: glft(mid=100.0, inventory=q, gamma=0.1, sigma=0.5, A=1.0, k=2.0),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_long_inventory_lowers_both_quotes(name):
    flat, long, short = MODELS[name](0.0), MODELS[name](2.0), MODELS[name](-2.0)
    assert flat.bid < flat.ask
    assert long.bid < flat.bid and long.ask < flat.ask
    assert short.bid > flat.bid and short.ask > flat.ask
    assert long.reservation < flat.reservation < short.reservation


# -- funding ----------------------------------------------------------------------------


def test_funding_shift_sign_and_size():
    # Longs pay 0.01 %/h; over 2 h a long costs 0.02 % of 3000 = 0.6 per unit.
    assert funding_shift(mid=3000.0, funding_rate=0.0001, funding_horizon_s=7200.0) == pytest.approx(-0.6)
    assert funding_shift(mid=3000.0, funding_rate=-0.0001, funding_horizon_s=7200.0) == pytest.approx(0.6)
    assert funding_shift(mid=3000.0, funding_rate=0.0001, funding_horizon_s=0.0) == 0.0


@pytest.mark.parametrize("model", ["seed", "avellaneda_stoikov", "glft"])
def test_positive_funding_lowers_both_quotes(model):
    market = eth_market(
        post_only=False, quote_notional_cap_usd=50.0,
        model=ModelConfig(type=model, gamma=0.01, funding_horizon_s=3600.0),
    )
    args = dict(spec=ETH, market=market, best_bid_ticks=None, best_ask_ticks=None, mid=2000.0, sigma=1e-4,
                inventory_lots=0)
    neutral = compute_quote(**args)
    longs_pay = compute_quote(**args, funding_rate=0.001)  # 2 USD per ETH per hour
    shorts_pay = compute_quote(**args, funding_rate=-0.001)
    assert longs_pay.reservation == pytest.approx(neutral.reservation - 2.0)
    assert shorts_pay.reservation == pytest.approx(neutral.reservation + 2.0)
    assert longs_pay.bid_ticks < neutral.bid_ticks and longs_pay.ask_ticks < neutral.ask_ticks
    assert shorts_pay.bid_ticks > neutral.bid_ticks and shorts_pay.ask_ticks > neutral.ask_ticks


# -- compute_quote ----------------------------------------------------------------------


def test_seed_worked_example_quote_size():
    # ETH at 2000, 10 USD per quote → 0.005 ETH a side (venue minimum lowered to allow it).
    market = eth_market(quote_notional_cap_usd=10.0, min_order_size=0.0)
    intent = compute_quote(
        spec=ETH_SMALL_MIN, market=market, best_bid_ticks=19999, best_ask_ticks=20001, mid=2000.0,
        sigma=1e-4, inventory_lots=0,
    )
    assert ETH_SMALL_MIN.lots_to_qty(intent.bid_lots) == Decimal("0.005")
    assert ETH_SMALL_MIN.lots_to_qty(intent.ask_lots) == Decimal("0.005")
    assert intent.bid_ticks < 20000 < intent.ask_ticks


def test_side_below_venue_minimum_is_not_quoted():
    # Same example on the real ETH grid: 0.005 ETH is under the venue's 0.01 minimum.
    market = eth_market(quote_notional_cap_usd=10.0)
    intent = compute_quote(
        spec=ETH, market=market, best_bid_ticks=19999, best_ask_ticks=20001, mid=2000.0, sigma=1e-4,
        inventory_lots=0,
    )
    assert (intent.bid_lots, intent.ask_lots) == (0, 0)
    assert not intent.has_bid and not intent.has_ask


def test_config_minimum_above_venue_minimum_applies():
    # 50 USD at 2000 → 25 lots, but the config asks for at least 0.03 ETH.
    assert min_quote_lots(ETH, 0.03) == 30
    assert min_quote_lots(ETH, 0.0) == ETH.min_order_lots == 10
    market = eth_market(quote_notional_cap_usd=50.0, min_order_size=0.03)
    intent = compute_quote(
        spec=ETH, market=market, best_bid_ticks=19999, best_ask_ticks=20001, mid=2000.0, sigma=1e-4,
        inventory_lots=0,
    )
    assert (intent.bid_lots, intent.ask_lots) == (0, 0)


def test_skewed_sizes_lean_against_inventory():
    assert skewed_sizes(base_lots=10, inventory_lots=0) == (10, 10)
    assert skewed_sizes(base_lots=10, inventory_lots=10) == (5, 20)  # long: sell more, buy less
    assert skewed_sizes(base_lots=10, inventory_lots=-4) == (14, 7)
    assert skewed_sizes(base_lots=10, inventory_lots=1000) == (0, 20)
    assert skewed_sizes(base_lots=0, inventory_lots=5) == (0, 0)


def test_inventory_skews_sizes_in_compute_quote():
    market = eth_market(quote_notional_cap_usd=50.0)  # 25 lots at 2000
    args = dict(spec=ETH, market=market, best_bid_ticks=19999, best_ask_ticks=20001, mid=2000.0, sigma=1e-4)
    long = compute_quote(**args, inventory_lots=25)
    assert long.ask_lots > 25 > long.bid_lots > 0
    short = compute_quote(**args, inventory_lots=-25)
    assert short.bid_lots > 25 > short.ask_lots > 0


def test_default_k_from_base_spread_with_tick_floor():
    assert default_intensity_k(spec=ETH, mid=2000.0, base_spread=0.0005) == pytest.approx(1 / 1.0)
    assert default_intensity_k(spec=ETH, mid=2000.0, base_spread=0.0) == pytest.approx(1 / 0.1)
    market = eth_market(post_only=False, base_spread=0.0005, model=ModelConfig(type="avellaneda_stoikov", gamma=1e-9))
    intent = compute_quote(
        spec=ETH, market=market, best_bid_ticks=None, best_ask_ticks=None, mid=2000.0, sigma=0.0, inventory_lots=0
    )
    # γ → 0: half-spread → 1/k = base_spread·mid = 1 USD = 10 ticks.
    assert intent.half_spread == pytest.approx(1.0, rel=1e-6)
    assert (intent.bid_ticks, intent.ask_ticks) == (19990, 20010)


def test_maker_fee_widens_and_rebate_narrows():
    market = eth_market(post_only=False, model=ModelConfig(type="avellaneda_stoikov", gamma=0.01, k=1.0))
    args = dict(spec=ETH, market=market, best_bid_ticks=None, best_ask_ticks=None, mid=2000.0, sigma=1e-4,
                inventory_lots=0)
    plain = compute_quote(**args)
    fee = compute_quote(**args, maker_fee_rate=0.0002)  # 0.4 USD = 4 ticks a side
    rebate = compute_quote(**args, maker_fee_rate=-0.0001)
    assert (fee.bid_ticks, fee.ask_ticks) == (plain.bid_ticks - 4, plain.ask_ticks + 4)
    assert (rebate.bid_ticks, rebate.ask_ticks) == (plain.bid_ticks + 2, plain.ask_ticks - 2)


def test_post_only_clamps_to_the_touch():
    # Very long: the seed fair drops far below the book, the ask must still not cross the bid.
    market = eth_market(k=0.01, quote_notional_cap_usd=50.0)
    intent = compute_quote(
        spec=ETH, market=market, best_bid_ticks=19999, best_ask_ticks=20001, mid=2000.0, sigma=1e-4,
        inventory_lots=250,
    )
    assert intent.ask_ticks == 20000  # best_bid + 1 tick
    assert intent.bid_ticks < intent.ask_ticks
    # Very short: the bid may not reach the ask.
    intent = compute_quote(
        spec=ETH, market=market, best_bid_ticks=19999, best_ask_ticks=20001, mid=2000.0, sigma=1e-4,
        inventory_lots=-250,
    )
    assert intent.bid_ticks == 20000


def test_venue_max_order_value_caps_size():
    spec = attrs.evolve(BTC, max_limit_order_value=Decimal("1000"))
    market = MarketConfig(name="BTC-USD", quote_notional_cap_usd=5000.0)
    intent = compute_quote(
        spec=spec, market=market, best_bid_ticks=84077, best_ask_ticks=84078, mid=84077.5, sigma=1e-4,
        inventory_lots=0,
    )
    assert intent.has_bid and intent.has_ask
    assert spec.notional(intent.bid_ticks, intent.bid_lots) <= Decimal("1000")
    assert spec.notional(intent.ask_ticks, intent.ask_lots) <= Decimal("1000")


@pytest.mark.parametrize(
    ("mid", "sigma", "what"),
    [(math.nan, 1e-4, "mid"), (0.0, 1e-4, "mid"), (-5.0, 1e-4, "mid"), (2000.0, math.nan, "sigma"),
     (2000.0, -1.0, "sigma")],
)
def test_unusable_inputs_give_an_empty_intent_with_a_note(mid, sigma, what):
    intent = compute_quote(
        spec=ETH, market=eth_market(), best_bid_ticks=19999, best_ask_ticks=20001, mid=mid, sigma=sigma,
        inventory_lots=0,
    )
    assert (intent.bid_lots, intent.ask_lots) == (0, 0)
    assert what in intent.note


def test_quote_intent_rejects_crossed_or_negative():
    with pytest.raises(ValueError, match="crossed"):
        QuoteIntent(market="ETH-USD", bid_ticks=10, bid_lots=1, ask_ticks=10, ask_lots=1)
    with pytest.raises(ValueError, match="negative"):
        QuoteIntent(market="ETH-USD", bid_ticks=10, bid_lots=-1, ask_ticks=11, ask_lots=1)
    # A one-sided intent need not order its prices.
    QuoteIntent(market="ETH-USD", bid_ticks=10, bid_lots=0, ask_ticks=5, ask_lots=1)


# -- properties -------------------------------------------------------------------------


@st.composite
def quote_inputs(draw):
    spec = draw(st.sampled_from([ETH, ETH_SMALL_MIN, BTC]))
    tick = float(spec.tick_size)
    best_bid = draw(st.integers(1, 200_000))
    spread_ticks = draw(st.integers(1, 50))
    best_ask = best_bid + spread_ticks
    mid = (best_bid + best_ask) / 2 * tick
    lot_notional = float(spec.lot_size) * mid
    inventory = draw(st.integers(-2000, 2000)) * max(1, int(10 / lot_notional))
    model = ModelConfig(
        type=draw(st.sampled_from(["seed", "avellaneda_stoikov", "glft"])),
        gamma=draw(st.floats(1e-6, 10)),
        k=draw(st.none() | st.floats(1e-4, 100)),
        A=draw(st.floats(0.01, 100)),
        xi=draw(st.none() | st.floats(1e-6, 10)),
        delta=draw(st.floats(0.1, 5)),
        horizon_s=draw(st.floats(1, 3600)),
        funding_horizon_s=draw(st.floats(0, 8 * 3600)),
    )
    market = MarketConfig(
        name=spec.name,
        k=draw(st.floats(0, 0.01)),
        alpha=draw(st.floats(0, 2)),
        beta=draw(st.floats(0, 2)),
        base_spread=draw(st.floats(0, 0.01)),
        quote_notional_cap_usd=draw(st.floats(1, 100_000)),
        min_order_size=draw(st.sampled_from([0.0, float(spec.min_order_size) * 3])),
        model=model,
    )
    return dict(
        spec=spec, market=market, best_bid_ticks=best_bid, best_ask_ticks=best_ask, mid=mid,
        sigma=draw(st.floats(0, 0.01)), inventory_lots=inventory,
        funding_rate=draw(st.floats(-0.003, 0.003)), maker_fee_rate=draw(st.floats(-0.0002, 0.001)),
    )


@settings(max_examples=400, deadline=None)
@given(quote_inputs())
def test_compute_quote_never_crosses_and_stays_on_grid(args):
    intent = compute_quote(**args)
    spec, market = args["spec"], args["market"]
    min_lots = min_quote_lots(spec, market.min_order_size)
    assert intent.note == ""
    for lots in (intent.bid_lots, intent.ask_lots):
        assert isinstance(lots, int)
        assert lots == 0 or lots >= min_lots
    assert isinstance(intent.bid_ticks, int) and isinstance(intent.ask_ticks, int)
    assert intent.bid_ticks < intent.ask_ticks
    if intent.has_bid:
        assert 0 < intent.bid_ticks < args["best_ask_ticks"]
    if intent.has_ask:
        assert intent.ask_ticks > args["best_bid_ticks"]
