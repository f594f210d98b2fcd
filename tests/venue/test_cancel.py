"""The one cancel-and-confirm loop (extmm.venue.cancel) as the running bot uses it: the
list read at startup is not read again, a refused key is not final, unknown stays unknown."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import trio

from extmm.domain.units import Side
from extmm.venue.cancel import VenueRefused, cancel_and_confirm, cancel_ours
from extmm.venue.errors import AuthError
from extmm.venue.types import OrderInfo


def order(order_id: int, market: str = "BTC-USD", prefix: str = "extmm") -> OrderInfo:
    return OrderInfo(
        id=order_id, external_id=f"{prefix}-{order_id}", market=market, side=Side.BUY, type="LIMIT",
        status="NEW", status_reason=None, price=Decimal("80000"), qty=Decimal("0.001"),
    )


class Venue:
    """Open orders that go away when cancelled by external id; optionally refusing the key."""

    def __init__(self, orders: list[OrderInfo], *, refuse: bool = False) -> None:
        self.orders = orders
        self.refuse = refuse
        self.calls: list[str] = []

    async def get_open_orders(self, market: str | None = None) -> list[OrderInfo]:
        await trio.sleep(0.01)
        self.calls.append("list")
        if self.refuse:
            raise AuthError("401 unauthorized")
        return [o for o in self.orders if market in (None, o.market)]

    async def mass_cancel(self, **selection: Any) -> None:
        await trio.sleep(0.01)
        self.calls.append("cancel")
        gone = set(selection.get("external_ids", ()))
        self.orders = [o for o in self.orders if o.external_id not in gone]


async def test_a_list_handed_in_is_used_for_the_first_round(autojump_clock):
    listed = [order(1), order(2, "ETH-USD"), order(9, prefix="other"), order(4, "SOL-USD")]
    venue = Venue(list(listed))
    result = await cancel_ours(venue, prefix="extmm", markets=["BTC-USD", "ETH-USD"], timeout_s=5,  # type: ignore[arg-type]
                               listed=listed)
    assert venue.calls == ["cancel", "list"]  # no list before the first cancel
    assert result.confirmed_none and result.left == 0 and result.gone == 2
    assert {o.id for o in result.seen} == {1, 2}
    # Another market's order of ours and a foreign order are left alone.
    assert {o.id for o in venue.orders} == {9, 4}


async def test_the_bot_keeps_trying_through_a_refused_key_and_reports_unknown(autojump_clock):
    venue = Venue([order(1)], refuse=True)
    result = await cancel_ours(venue, prefix="extmm", markets=["BTC-USD"], timeout_s=2)  # type: ignore[arg-type]
    assert result.remaining is None and result.left is None and not result.confirmed_none
    assert venue.calls.count("list") > 2  # retried until the deadline
    assert any("refused the API key" in p for p in result.problems)


async def test_an_operator_command_stops_at_a_refused_key(autojump_clock):
    venue = Venue([order(1)], refuse=True)
    with pytest.raises(VenueRefused, match="refused the API key"):
        await cancel_and_confirm(venue, prefix="extmm", timeout_s=2)  # type: ignore[arg-type]
    assert venue.calls == ["list"]
