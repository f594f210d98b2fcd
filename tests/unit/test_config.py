"""Configuration: the seed's keys load, every problem is reported with its key path."""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from extmm.config import BotConfig, ConfigError, dump_config, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "config.json"


def example() -> dict:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_example_config_loads_with_its_values():
    cfg = load_config(EXAMPLE)
    assert [m.name for m in cfg.enabled_markets] == ["BTC-USD", "ETH-USD"]
    assert (cfg.stp, cfg.quote_loop_ms, cfg.replace_coalesce_ms, cfg.dead_mans_switch_sec) == ("ACCOUNT", 250, 400, 120)
    assert (cfg.risk.max_net_position_usd, cfg.risk.max_open_orders, cfg.risk.min_balance_usd) == (200, 30, 50)
    btc, eth = cfg.markets
    assert (btc.k, btc.alpha, btc.beta, btc.base_spread) == (0.0001, 0.2, 0.25, 0.0002)
    assert (eth.min_order_size, eth.base_spread, eth.quote_notional_cap_usd) == (0.01, 0.0002, 50)
    assert btc.post_only and btc.fees_override is None and cfg.fees_override is None
    assert btc.model.type == "seed"


def test_every_seed_key_is_accepted_and_lands_in_its_field():
    data = {
        "stp": "CLIENT",
        "quote_loop_ms": 100,
        "replace_coalesce_ms": 0,
        "dead_mans_switch_sec": 60,
        "risk": {"max_net_position_usd": 1000, "max_open_orders": 4, "min_balance_usd": 10.5},
        "markets": [
            {
                "name": "BTC-USD",
                "enabled": True,
                "k": 0.001,
                "alpha": 0.7,
                "beta": 0.1,
                "base_spread": 0.0003,
                "quote_notional_cap_usd": 75,
                "replace_threshold_bps": 1.5,
                "min_order_size": 0.0002,
                "post_only": False,
                "fees_override": {"makerFeeRate": "-0.0001", "takerFeeRate": 0.00025},
                "model": "glft",
            },
            {
                "name": "ETH-USD",
                "enabled": False,
                "K": 0.002,
                "fees_override": None,
                "model": {"type": "avellaneda_stoikov", "gamma": 0.5, "horizon_s": 30},
            },
            {"name": "SOL-USD"},
        ],
        "fees_override": {"makerFeeRate": "0", "takerFeeRate": "0.0005"},
    }
    cfg = parse_config(data)
    assert (cfg.stp, cfg.quote_loop_ms, cfg.replace_coalesce_ms, cfg.dead_mans_switch_sec) == ("CLIENT", 100, 0, 60)
    assert (cfg.risk.max_net_position_usd, cfg.risk.max_open_orders, cfg.risk.min_balance_usd) == (1000, 4, 10.5)
    btc, eth, sol = cfg.markets
    assert (btc.k, btc.alpha, btc.beta, btc.base_spread) == (0.001, 0.7, 0.1, 0.0003)
    assert (btc.quote_notional_cap_usd, btc.replace_threshold_bps, btc.min_order_size) == (75, 1.5, 0.0002)
    assert btc.post_only is False and btc.enabled is True
    assert btc.fees_override.makerFeeRate == Decimal("-0.0001")
    assert btc.fees_override.takerFeeRate == Decimal("0.00025")
    assert btc.model.type == "glft"
    assert eth.k == 0.002 and eth.enabled is False and eth.fees_override is None
    assert (eth.model.type, eth.model.gamma, eth.model.horizon_s) == ("avellaneda_stoikov", 0.5, 30)
    assert cfg.enabled_markets == [btc, sol]
    # The per-market override wins over the top-level one.
    assert cfg.fees_for(btc) is btc.fees_override
    assert cfg.fees_for(sol) == cfg.fees_override
    assert cfg.fees_override.takerFeeRate == Decimal("0.0005")


def test_missing_optional_keys_take_the_defaults():
    cfg = parse_config({"markets": [{"name": "BTC-USD"}]})
    assert cfg == BotConfig(markets=cfg.markets)
    assert cfg.markets[0].model.type == "seed"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["markets"][1].update(base_spread="abc"), ['markets[1].base_spread: expected a number ≥ 0, got "abc"']),
        (lambda d: d["markets"][0].update(post_only="yes"), ['markets[0].post_only: expected true or false, got "yes"']),
        (
            lambda d: d["markets"][0].update(quote_notional_cap_usd=True),
            ["markets[0].quote_notional_cap_usd: expected a number > 0, got true"],
        ),
        (lambda d: d["risk"].update(max_open_orders=2.5), ["risk.max_open_orders: expected an integer > 0, got 2.5"]),
        (lambda d: d.update(quote_loop_ms=-1), ["quote_loop_ms: expected an integer > 0, got -1"]),
        (lambda d: d.update(stp="NONE"), ['stp: expected one of "DISABLED", "ACCOUNT", "CLIENT", got "NONE"']),
        (
            lambda d: d["markets"][0].update(fees_override={"makerFeeRate": "0.5"}),
            ['markets[0].fees_override.makerFeeRate: expected a fee rate between -0.01 and 0.01, got "0.5"'],
        ),
        (
            lambda d: d["markets"][0].update(model={"type": "glft", "gamma": -1}),
            ["markets[0].model.gamma: expected a number > 0, got -1"],
        ),
        (
            lambda d: d["markets"][1].update(model="markov"),
            ['markets[1].model.type: expected one of "seed", "avellaneda_stoikov", "glft", got "markov"'],
        ),
        (lambda d: d["markets"][0].update(name=""), ['markets[0].name: expected a market name such as "BTC-USD", got ""']),
        (lambda d: d.update(dead_mans_switch_sec=2), ["dead_mans_switch_sec: expected an integer ≥ 3, got 2"]),
        (lambda d: d.update(markets=[]), ["markets: expected at least one enabled market"]),
    ],
    ids=lambda v: "" if callable(v) else v[0].split(":")[0],
)
def test_wrong_values_are_reported_with_their_exact_key_path(mutate, expected):
    data = example()
    mutate(data)
    assert problems_of(data) == expected


def test_unknown_keys_are_reported_at_every_level():
    data = example()
    data["quote_loop"] = 250
    data["risk"]["max_position"] = 1
    data["markets"][1]["spread"] = 0.1
    data["markets"][0]["fees_override"] = {"maker": "0"}
    assert sorted(problems_of(data)) == [
        "markets[0].fees_override.maker: unknown key",
        "markets[1].spread: unknown key",
        "quote_loop: unknown key",
        "risk.max_position: unknown key",
    ]


def test_market_name_is_required():
    data = example()
    del data["markets"][1]["name"]
    assert problems_of(data) == ["markets[1].name: required key is missing"]


def test_duplicate_markets_are_refused():
    data = example()
    data["markets"][1]["name"] = "BTC-USD"
    (line,) = problems_of(data)
    assert line.startswith("markets[1].name: duplicate market") and "markets[0]" in line


def test_several_problems_are_all_listed():
    data = example()
    data["markets"][0]["alpha"] = -1
    data["markets"][1]["enabled"] = "no"
    data["risk"]["min_balance_usd"] = None
    assert sorted(problems_of(data)) == [
        "markets[0].alpha: expected a number ≥ 0, got -1",
        'markets[1].enabled: expected true or false, got "no"',
        "risk.min_balance_usd: expected a number ≥ 0, got null",
    ]


@pytest.mark.parametrize("data", [[], "config", 3, None])
def test_a_non_object_document_is_refused(data):
    assert problems_of(data)[0].startswith("(top level): expected an object")


def test_unreadable_and_invalid_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"markets": [', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 1"):
        load_config(broken)


# -- random mutations ---------------------------------------------------------------------

KEY_PATH = re.compile(r"^(\(top level\)|[A-Za-z_]\w*(\[\d+\])*(\.[A-Za-z_]\w*(\[\d+\])*)*): \S")
KNOWN_KEYS = sorted(
    {
        *example().keys(),
        *example()["risk"].keys(),
        *example()["markets"][0].keys(),
        "K", "model", "type", "gamma", "makerFeeRate", "takerFeeRate", "leverage", "horizon_s",
    }
)
identifiers = st.sampled_from(KNOWN_KEYS) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.sampled_from([0, -1, 1, 2, 3, 0.5, 1e-9, 10**400, "0.001", "seed", "glft", "ACCOUNT", "BTC-USD", ""])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(identifiers, inner, max_size=3),
    max_leaves=6,
)


def containers(node, path=()):
    """Every dict or list inside `node`, with the path to reach it."""
    if isinstance(node, dict | list):
        yield path, node
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            yield from containers(child, (*path, key))


def mutate(data, draw) -> None:
    _, node = draw(st.sampled_from(list(containers(data))))
    keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
    operation = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if operation == "add" or not keys:
        value = draw(json_values)
        if isinstance(node, dict):
            node[draw(identifiers)] = value
        else:
            node.append(value)
    elif operation == "replace":
        node[draw(st.sampled_from(keys))] = draw(json_values)
    else:
        del node[draw(st.sampled_from(keys))]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_mutations_give_a_config_or_key_path_problems(data):
    document = copy.deepcopy(example())
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        mutate(document, data.draw)
    try:
        cfg = parse_config(document)
    except ConfigError as exc:
        event("refused")
        assert exc.problems
        for line in exc.problems:
            assert KEY_PATH.match(line), line
    else:
        event("accepted")
        assert isinstance(cfg, BotConfig) and cfg.enabled_markets
        assert parse_config(dump_config(cfg)) == cfg
