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


def _remember(cache: dict[int, Decimal], units: int, size: Decimal) -> Decimal:
    """`_from_units`, kept in a bounded cache (emptied when full)."""
    value = _from_units(units, size)
    if len(cache) >= _FROM_UNITS_LIMIT:
        cache.clear()
    cache[units] = value
    return value


# The same prices and sizes come back all the time (the touch moves by a few ticks), so
# ticks/lots → Decimal is cached per (step, units). Bounded: cleared when full. Decimals are
# immutable, so handing out the same object is safe.
_FROM_UNITS_LIMIT = 1 << 14


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

    # Derived once (the hot paths convert on every book update): floats of the steps and the
    # venue's max order value, the minimum order size in lots, and the ticks/lots → Decimal
    # caches. Not part of the value (eq/hash/repr), recomputed by `attrs.evolve`.
    _tick_f: float = attrs.field(init=False, eq=False, repr=False)
    _lot_f: float = attrs.field(init=False, eq=False, repr=False)
    _max_value_f: float = attrs.field(init=False, eq=False, repr=False)
    _min_lots: int | None = attrs.field(init=False, eq=False, repr=False)
    _prices: dict[int, Decimal] = attrs.field(init=False, eq=False, repr=False)
    _qtys: dict[int, Decimal] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.tick_size <= 0 or self.lot_size <= 0:
            raise ValueError(f"{self.name}: tick and lot sizes must be positive")
        derived: dict[str, object] = {
            "_tick_f": float(self.tick_size),
            "_lot_f": float(self.lot_size),
            "_max_value_f": float(self.max_limit_order_value),
            "_min_lots": self._compute_min_lots(),
            "_prices": {},
            "_qtys": {},
        }
        for key, value in derived.items():
            object.__setattr__(self, key, value)

    # -- prices -------------------------------------------------------------------
    def price_to_ticks(self, price: Decimal, rounding: Rounding = Rounding.EXACT) -> int:
        return _to_units(price, self.tick_size, rounding, f"{self.name} price")

    def ticks_to_price(self, ticks: int) -> Decimal:
        try:
            return self._prices[ticks]
        except KeyError:
            return _remember(self._prices, ticks, self.tick_size)

    def ticks_to_float(self, ticks: int) -> float:
        return ticks * self._tick_f

    @property
    def tick_float(self) -> float:
        """`tick_size` as a float (for models)."""
        return self._tick_f

    @property
    def max_limit_order_value_float(self) -> float:
        return self._max_value_f

    def float_to_ticks(self, price: float, side: Side) -> int:
        """Side-aware rounding of a model price: bids down, asks up."""
        units = price / self._tick_f
        # A float a hair under a whole tick (e.g. 84049.99999999) must not lose a tick.
        nearest = round(units)
        if abs(units - nearest) < 1e-9:
            return int(nearest)
        return math.floor(units) if side is Side.BUY else math.ceil(units)

    # -- sizes --------------------------------------------------------------------
    def qty_to_lots(self, qty: Decimal, rounding: Rounding = Rounding.EXACT) -> int:
        return _to_units(qty, self.lot_size, rounding, f"{self.name} qty")

    def lots_to_qty(self, lots: int) -> Decimal:
        try:
            return self._qtys[lots]
        except KeyError:
            return _remember(self._qtys, lots, self.lot_size)

    def lots_to_float(self, lots: int) -> float:
        return lots * self._lot_f

    @property
    def lot_float(self) -> float:
        """`lot_size` as a float (for models)."""
        return self._lot_f

    def float_to_lots(self, qty: float) -> int:
        """Sizes always round down (never quote more than the limit allows)."""
        units = qty / self._lot_f
        nearest = round(units)
        if abs(units - nearest) < 1e-9:
            return max(int(nearest), 0)
        return max(math.floor(units), 0)

    @property
    def min_order_lots(self) -> int:
        """`min_order_size` in lots, rounded up (computed once)."""
        if self._min_lots is None:  # unusable minimum: raise where it is read, as before
            return self.qty_to_lots(self.min_order_size, Rounding.UP)
        return self._min_lots

    def _compute_min_lots(self) -> int | None:
        try:
            return self.qty_to_lots(self.min_order_size, Rounding.UP)
        except (ArithmeticError, ValueError, TypeError):
            return None

    def notional(self, ticks: int, lots: int) -> Decimal:
        return self.ticks_to_price(ticks) * self.lots_to_qty(lots)
