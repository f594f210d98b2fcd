"""Leverage and margin: `PATCH /user/leverage` (SPEC §4.7), the initial-margin check on a
new order (1140) and the reduce-only check.

The exact arithmetic (margin tiers, initial margin, equity) is `AccountState`'s; this
module decides what the venue refuses.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from extmm.domain.units import Side
from extmm.sim.account import AccountState
from extmm.sim.model import SimOrder, SimReject
from extmm.sim.world import SimMarket, World


class Margin:
    """Leverage settings and margin checks over a `World`; see the module docstring."""

    def __init__(self, world: World) -> None:
        self.world = world

    def set_leverage(self, account_id: int, market: str, leverage: Decimal) -> None:
        """`PATCH /user/leverage` (SPEC §4.7): refused when out of range, above what the
        margin tier of the current position and orders allows, or when the margin at the
        new leverage exceeds equity. The venue's codes are 1049–1053 without a documented
        mapping; ours: 1049 out of range, 1050 above the tier, 1051 margin short."""
        world = self.world
        m = world.market(market)
        account = world.account(account_id)
        max_leverage = Decimal(str(m.raw.get("tradingConfig", {}).get("maxLeverage", "50")))
        if not 0 < leverage <= max_leverage:
            raise SimReject(1049, f"leverage must be in (0, {max_leverage}]")
        marks = world.marks()
        terms = m.terms
        book = account.open_book.get(market) or [0, 0]
        buys, sells = book[0], book[1]  # ticks×lots resting on each side
        position = account.positions.get(market)
        value = position.signed_value(terms.lot, marks[market]) if position and position.lots else Fraction(0)
        unit = terms.tick * terms.lot
        exposure = max(abs(value + buys * unit), abs(value - sells * unit))
        tier_max = 1 / terms.risk_factor(exposure)
        if Fraction(leverage) > tier_max:
            raise SimReject(1050, f"leverage {leverage} is above {float(tier_max):g}, the maximum for this position size")
        previous = account.leverage.get(market)
        account.leverage[market] = leverage
        equity = account.balance + account.unrealised(world.terms, marks)
        if account.initial_margin(world.terms, marks, world.config.default_leverage) > equity:
            if previous is None:
                del account.leverage[market]
            else:
                account.leverage[market] = previous
            raise SimReject(1051, f"margin at leverage {leverage} would exceed the account's equity")
        world.emit_balance(account)

    def leverage(self, account_id: int, market: str | None = None) -> list[tuple[str, Decimal]]:
        world = self.world
        account = world.account(account_id)
        names = [market] if market else list(world.markets)
        return [(name, account.leverage_for(name, world.config.default_leverage)) for name in names]

    def check_order(
        self, account: AccountState, m: SimMarket, side: Side, units: int, previous: SimOrder | None
    ) -> None:
        """1140 if a new order (`units` = ticks×lots; replacing `previous`) would raise the
        account's initial margin above its equity."""
        world = self.world
        lev = world.config.default_leverage
        adjust: list[tuple[str, int, int]] = [(m.name, side.sign, units)]
        if previous is not None:
            adjust.append(
                (previous.market, previous.side.sign, -previous.price_ticks * previous.remaining_lots)
            )
        # Screen in floats first: far from the limit the exact rational check cannot differ.
        float_marks = {name: float(market.mark) for name, market in world.markets.items()}
        estimate, equity_estimate = account.margin_estimate(world.terms, float_marks, lev, extra=adjust)
        if estimate < 0.99 * equity_estimate:
            return
        marks = world.marks()
        before = account.initial_margin(world.terms, marks, lev)
        after = account.initial_margin(world.terms, marks, lev, extra=adjust)
        equity = account.balance + account.unrealised(world.terms, marks)
        if after > before and after > equity:
            raise SimReject(1140, "order cost exceeds the available balance")


def reduces(account: AccountState, order: SimOrder) -> bool:
    """Whether a reduce-only order shrinks the account's current position (simplified)."""
    position = account.positions.get(order.market)
    held = position.lots if position else 0
    return held != 0 and (held > 0) != (order.side.sign > 0) and order.qty_lots <= abs(held)
