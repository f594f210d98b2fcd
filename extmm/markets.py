"""Market definitions: the venue's market objects and the integer grid derived from them.

`bundled_markets()` returns the market objects shipped in `extmm/data/markets.json`
(BTC-USD as captured from mainnet, ETH-USD derived from it); the simulator serves them
and offline tools (benchmarks, backtests) use them when no venue is at hand.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from extmm.domain.units import MarketSpec


def spec_from_market(market: dict[str, Any]) -> MarketSpec:
    """Build the integer grid of a market from a `/info/markets` object."""
    tc = market["tradingConfig"]
    return MarketSpec(
        name=market["name"],
        tick_size=Decimal(tc["minPriceChange"]),
        lot_size=Decimal(tc["minOrderSizeChange"]),
        min_order_size=Decimal(tc["minOrderSize"]),
        max_num_orders=int(tc.get("maxNumOrders", 200)),
        limit_price_cap=Decimal(tc.get("limitPriceCap", "0.05")),
        limit_price_floor=Decimal(tc.get("limitPriceFloor", "0.05")),
        max_limit_order_value=Decimal(tc.get("maxLimitOrderValue", "15000000")),
        max_position_value=Decimal(tc.get("maxPositionValue", "60000000")),
    )


@cache
def _bundled_raw() -> str:
    return resources.files("extmm").joinpath("data/markets.json").read_text()


def bundled_markets() -> dict[str, dict[str, Any]]:
    """A fresh copy of the bundled market objects, by name."""
    return {m["name"]: m for m in json.loads(_bundled_raw())["markets"]}


def bundled_spec(name: str) -> MarketSpec:
    markets = bundled_markets()
    if name not in markets:
        raise KeyError(f"unknown market {name!r}; bundled: {', '.join(sorted(markets))}")
    return spec_from_market(markets[name])
