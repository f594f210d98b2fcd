"""Integer ticks and lots for one market, and exact conversion to and from Decimal.

Inside the bot prices are integer ticks of `minPriceChange` and sizes integer lots of
`minOrderSizeChange`; Decimal appears only at the wire. Rounding is side-aware: a bid
rounds down, an ask rounds up, so rounding never makes a quote more aggressive.
"""

from __future__ import annotations

import enum
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import attrs


class Side(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        """+1 for a buy (inventory goes up), -1 for a sell."""
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class Rounding(enum.Enum):
    EXACT = "exact"  # raise if the value is not on the grid
    DOWN = "down"
    UP = "up"


class OffGridError(ValueError):
    """A price or size is not a whole multiple of the market's tick or lot."""


def _to_units(value: Decimal, step: Decimal, rounding: Rounding, what: str) -> int:
    units = value / step
    if rounding is Rounding.EXACT:
        whole = units.to_integral_value()
        if whole != units:
            raise OffGridError(f"{what} {value} is not a multiple of {step}")
        return int(whole)
    mode = ROUND_FLOOR if rounding is Rounding.DOWN else ROUND_CEILING
    return int(units.to_integral_value(rounding=mode))


def _from_units(units: int, step: Decimal) -> Decimal:
    # Quantize to the step's exponent so the wire form is canonical ("84050", "0.00100").
    return (step * units).quantize(step)


@attrs.frozen(kw_only=True)
class MarketSpec:
    """The grid and limits of one market, from `/info/markets` `tradingConfig`."""

    name: str
    tick_size: Decimal  # minPriceChange
    lot_size: Decimal  # minOrderSizeChange
    min_order_size: Decimal  # minOrderSize
    max_num_orders: int = 200
    limit_price_cap: Decimal = Decimal("0.05")
    limit_price_floor: Decimal = Decimal("0.05")
    max_limit_order_value: Decimal = Decimal("15000000")
    max_position_value: Decimal = Decimal("60000000")

    def __attrs_post_init__(self) -> None:
        if self.tick_size <= 0 or self.lot_size <= 0:
            raise ValueError(f"{self.name}: tick and lot sizes must be positive")

    # -- prices -------------------------------------------------------------------
    def price_to_ticks(self, price: Decimal, rounding: Rounding = Rounding.EXACT) -> int:
        return _to_units(price, self.tick_size, rounding, f"{self.name} price")

    def ticks_to_price(self, ticks: int) -> Decimal:
        return _from_units(ticks, self.tick_size)

    def ticks_to_float(self, ticks: int) -> float:
        return ticks * float(self.tick_size)

    def float_to_ticks(self, price: float, side: Side) -> int:
        """Side-aware rounding of a model price: bids down, asks up."""
        units = price / float(self.tick_size)
        # A float a hair under a whole tick (e.g. 84049.99999999) must not lose a tick.
        nearest = round(units)
        if abs(units - nearest) < 1e-9:
            return int(nearest)
        return math.floor(units) if side is Side.BUY else math.ceil(units)

    # -- sizes --------------------------------------------------------------------
    def qty_to_lots(self, qty: Decimal, rounding: Rounding = Rounding.EXACT) -> int:
        return _to_units(qty, self.lot_size, rounding, f"{self.name} qty")

    def lots_to_qty(self, lots: int) -> Decimal:
        return _from_units(lots, self.lot_size)

    def lots_to_float(self, lots: int) -> float:
        return lots * float(self.lot_size)

    def float_to_lots(self, qty: float) -> int:
        """Sizes always round down (never quote more than the limit allows)."""
        units = qty / float(self.lot_size)
        nearest = round(units)
        if abs(units - nearest) < 1e-9:
            return max(int(nearest), 0)
        return max(math.floor(units), 0)

    @property
    def min_order_lots(self) -> int:
        return self.qty_to_lots(self.min_order_size, Rounding.UP)

    def notional(self, ticks: int, lots: int) -> Decimal:
        return self.ticks_to_price(ticks) * self.lots_to_qty(lots)
