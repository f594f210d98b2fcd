"""Executor: an order whose placement has an unknown outcome is cancelled, never replaced."""

from __future__ import annotations

from decimal import Decimal

import trio

from actors.executor import ExecutorParams, _Executor
from actors.messages import Approved
from extmm.domain import orders as om
from extmm.domain.execution import SideTarget
from extmm.domain.units import MarketSpec, Side
from extmm.ops.telemetry import Telemetry
from extmm.venue.errors import NetworkError
from extmm.venue.signing import ExternalIdFactory
from extmm.venue.types import OrderRequest, PlacedOrder

SPEC = MarketSpec(name="BTC-USD", tick_size=Decimal(1), lot_size=Decimal("0.0001"), min_order_size=Decimal("0.0001"))


class AmbiguousThenFinePort:
    """The first place times out with an outcome nobody could settle; later ones succeed."""

    def __init__(self) -> None:
        self.places: list[OrderRequest] = []
        self.cancels: list[str] = []

    async def place_order(self, order: OrderRequest) -> PlacedOrder:
        self.places.append(order)
        if len(self.places) == 1:
            exc = NetworkError("place_order: timed out")
            exc.placed = None  # type: ignore[attr-defined]  # the externalId lookups failed too
            raise exc
        return PlacedOrder(id=len(self.places), external_id=order.external_id)

    async def cancel_order_by_external_id(self, external_id: str) -> None:
        self.cancels.append(external_id)


async def test_an_unknown_placement_is_cancelled_by_external_id_then_requoted():
    port = AmbiguousThenFinePort()
    params = ExecutorParams(
        stp="ACCOUNT", post_only=True, replace_threshold_bps=0.0, coalesce_s=0.0, order_expiry_s=3600.0,
        maker_fee_rate=Decimal(0), taker_fee_rate=Decimal("0.00025"), prefix="extmm",
    )
    ex = _Executor(port=port, spec=SPEC, params=params, ids=ExternalIdFactory("extmm", run_id="t"),
                   epoch_ms=lambda: 1_790_000_000_000, telemetry=Telemetry(None))
    buy = ex.orders.sides[Side.BUY]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ex.side_worker, buy)
        ex.on_approved(Approved(bid=SideTarget(ticks=100_000, lots=10), ask=None, reasons=(),
                                decided_at=trio.current_time()))
        await trio.sleep(0.01)
        first = port.places[0].external_id
        assert ex.orders.records[first].state is om.OrderState.PENDING_NEW  # outcome unknown

        ex.on_approved(Approved(bid=SideTarget(ticks=100_010, lots=10), ask=None, reasons=(),
                                decided_at=trio.current_time()))
        await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    # The unknown order was cancelled by externalId, not named as the cancelId of a replace...
    assert port.cancels == [first]
    assert all(order.cancel_id != first for order in port.places)
    # ...and the new price went out as a fresh order.
    assert port.places[-1].price == Decimal(100_010) and port.places[-1].cancel_id is None
    assert ex.orders.records[first].state is om.OrderState.PENDING_CANCEL
