"""MarketSpec's conversion caches (issue 15's speed work) are bounded."""

from __future__ import annotations


def test_a_markets_conversion_caches_stay_bounded() -> None:
    """MarketSpec keeps tick and lot → Decimal conversions in caches emptied when full: a
    price that wanders for weeks must not grow them without bound (the soak test skips them
    as bounded)."""
    from decimal import Decimal

    from extmm.domain import units
    from extmm.domain.units import MarketSpec

    spec = MarketSpec(name="BTC-USD", tick_size=Decimal(1), lot_size=Decimal("0.0001"), min_order_size=Decimal("0.0001"))
    for ticks in range(3 * units._FROM_UNITS_LIMIT):
        assert spec.ticks_to_price(ticks) == Decimal(ticks)
        assert spec.lots_to_qty(ticks) == Decimal(ticks) * Decimal("0.0001")
    assert 0 < len(spec._prices) <= units._FROM_UNITS_LIMIT  # type: ignore[attr-defined]
    assert 0 < len(spec._qtys) <= units._FROM_UNITS_LIMIT  # type: ignore[attr-defined]
