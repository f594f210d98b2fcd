"""Executor: an approval that leaves a side's order within its thresholds does not wake the
side's worker (issue 15: most approvals on a busy book); one that calls for an action does,
at once."""

from __future__ import annotations

from decimal import Decimal

import trio

from actors.executor import ExecutorParams, _Executor
from actors.messages import Approved
from extmm.domain.execution import SideTarget
from extmm.domain.units import MarketSpec, Side
from extmm.ops.telemetry import Telemetry
from extmm.venue.signing import ExternalIdFactory
from extmm.venue.types import OrderRequest, PlacedOrder

SPEC = MarketSpec(name="BTC-USD", tick_size=Decimal(1), lot_size=Decimal("0.0001"), min_order_size=Decimal("0.0001"))


class Port:
    def __init__(self) -> None:
        self.places: list[OrderRequest] = []
        self.cancels: list[str] = []

    async def cancel_order_by_external_id(self, external_id: str) -> None:
        self.cancels.append(external_id)

    async def place_order(self, order: OrderRequest) -> PlacedOrder:
        self.places.append(order)
        return PlacedOrder(id=len(self.places), external_id=order.external_id)


class Steps(trio.abc.Instrument):
    def __init__(self, name: str) -> None:
        self.name, self.count = name, 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.name):
            self.count += 1


def _approve(ex: _Executor, ticks: int, lots: int = 10) -> None:
    ex.on_approved(Approved(bid=SideTarget(ticks=ticks, lots=lots), ask=None, reasons=(),
                            decided_at=trio.current_time()))


async def test_small_moves_leave_the_worker_asleep_and_a_big_one_replaces_at_once(autojump_clock):
    port = Port()
    params = ExecutorParams(
        stp="ACCOUNT", post_only=True, replace_threshold_bps=2.0, coalesce_s=0.0, order_expiry_s=3600.0,
        maker_fee_rate=Decimal(0), taker_fee_rate=Decimal("0.00025"), prefix="extmm", stale_target_s=5.0,
    )
    ex = _Executor(port=port, spec=SPEC, params=params, ids=ExternalIdFactory("extmm", run_id="t"),
                   epoch_ms=lambda: 1_790_000_000_000, telemetry=Telemetry(None))
    steps = Steps("side_worker")
    trio.lowlevel.add_instrument(steps)
    buy = ex.orders.sides[Side.BUY]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ex.side_worker, buy)
        _approve(ex, 100_000)
        await trio.sleep(0.01)
        assert len(port.places) == 1 and buy in ex.settled
        before = steps.count
        for i in range(1, 20):  # 1..19 ticks of 100 000: under 2 bps
            _approve(ex, 100_000 + i)
            await trio.sleep(0.01)
        assert steps.count == before  # never woken
        assert len(port.places) == 1
        assert buy.target == SideTarget(ticks=100_019, lots=10)
        moved_at = trio.current_time()
        _approve(ex, 100_030)  # 3 bps: a replace, without waiting for any timer
        await trio.testing.wait_all_tasks_blocked()
        assert len(port.places) == 2 and port.places[1].price == Decimal(100_030)
        assert trio.current_time() == moved_at
        # A size change past the size tolerance wakes it as well.
        _approve(ex, 100_030, lots=20)
        await trio.testing.wait_all_tasks_blocked()
        assert len(port.places) == 3 and port.places[2].qty == Decimal("0.0020")
        # Approvals stop: the worker's own timer still pulls the quote when targets go stale.
        last_approval = trio.current_time()
        await trio.sleep(6.0)
        assert port.cancels == [port.places[2].external_id]
        assert ex.counts.cancels == 1 and last_approval + 5.0 <= trio.current_time()
        nursery.cancel_scope.cancel()
    trio.lowlevel.remove_instrument(steps)
