"""`check --trade-test`: prove the whole order path on a testnet account (or a simulator).

Steps, each printed with its latency: arm the dead man's switch; place one post-only BUY
of the market's minimum size far below the touch (half the price band under the mark:
inside any band, SPEC §4.8 "Price bands"); see it NEW on the account stream; replace it
(new order with `cancelId`) and see the new one NEW and the old one gone; cancel it and
see CANCELLED; list open orders and confirm none of the ids we placed is open (a failed
listing is a failure: unknown is not zero); disarm the switch.

Any failure stops the test: every order it placed is cancelled (shielded, bounded), the
open-order listing must confirm they are gone, and only then is the switch disarmed —
otherwise it stays armed as the backstop and says so. The caller exits non-zero, naming
the step that failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import attrs
import trio

from extmm.domain.units import Rounding, Side
from extmm.venue.errors import RECOVERABLE_STREAM_ERRORS as RECOVERABLE
from extmm.venue.errors import VenueError
from extmm.venue.signing import ExternalIdFactory
from extmm.venue.types import MarketInfo, OrderInfo, OrderRequest, OrdersUpdate

DMS_COUNTDOWN_S = 60  # the venue cancels what the test placed if it dies mid-way
STEP_TIMEOUT_S = 15.0
ORDER_EXPIRY_S = 600
TERMINAL = ("CANCELLED", "REJECTED", "EXPIRED", "FILLED")


@attrs.frozen(kw_only=True)
class TradeStep:
    name: str
    passed: bool
    detail: str
    latency_ms: float | None = None

    def line(self) -> str:
        word = "OK" if self.passed else "FAIL"
        took = f" ({self.latency_ms:.0f} ms)" if self.latency_ms is not None else ""
        return f"{word} trade test {self.name}: {self.detail}{took}"


class StepFailed(Exception):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


class OrderWatch:
    """The latest state of each order seen on the account stream, by externalId."""

    def __init__(self) -> None:
        self.latest: dict[str, OrderInfo] = {}
        self.snapshot = trio.Event()
        self.error: str | None = None
        self._changed = trio.Event()

    async def run(self, stream: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                update = await stream.receive()
            except RECOVERABLE as exc:
                self.error = f"account stream failed: {exc}"
                self._changed.set()
                return
            if isinstance(update, OrdersUpdate):
                for order in update.orders:
                    self.latest[order.external_id] = order
                if update.is_snapshot:
                    self.snapshot.set()
                self._changed.set()
                self._changed = trio.Event()

    async def wait_status(self, step: str, external_id: str, wanted: Sequence[str], timeout_s: float) -> OrderInfo:
        with trio.move_on_after(timeout_s):
            while True:
                order = self.latest.get(external_id)
                if order is not None and order.status in wanted:
                    return order
                if self.error is not None:
                    raise StepFailed(step, self.error)
                if order is not None and order.status in TERMINAL:
                    reason = f" ({order.status_reason})" if order.status_reason else ""
                    raise StepFailed(step, f"{external_id} ended {order.status}{reason}, expected {'/'.join(wanted)}")
                await self._changed.wait()
        seen = self.latest.get(external_id)
        raise StepFailed(
            step,
            f"{external_id} not {'/'.join(wanted)} on the account stream within {timeout_s:g}s "
            f"(last seen: {seen.status if seen else 'nothing'})",
        )


def far_bid_ticks(info: MarketInfo, *, depth: Decimal) -> int:
    """A bid `depth` × the price band below the mark: far from the touch, inside the band."""
    spec = info.spec
    stats = info.raw.get("marketStats") or {}
    mark = Decimal(str(stats.get("markPrice") or stats.get("lastPrice") or 0))
    if mark <= 0:
        raise StepFailed("price", f"{info.name}: the venue reports no mark price")
    price = mark * (1 - spec.limit_price_floor * depth)
    return spec.price_to_ticks(price, Rounding.DOWN)


async def run_trade_test(
    venue: Any,
    market: str,
    *,
    prefix: str,
    epoch_ms: Callable[[], int],
    report: Callable[[TradeStep], None],
    step_timeout_s: float = STEP_TIMEOUT_S,
) -> bool:
    """Run every step against `venue` (a NetworkVenue with trading credentials); report
    each as it ends; True when all passed and nothing of ours is left open."""
    ids = ExternalIdFactory(prefix)
    placed: list[str] = []
    dms_armed = False

    async def step(name: str, action: Callable[[], Any]) -> Any:
        started = trio.current_time()
        try:
            with trio.fail_after(step_timeout_s):
                detail, value = await action()
        except StepFailed as exc:
            report(TradeStep(name=name, passed=False, detail=exc.detail))
            raise
        except (VenueError, trio.TooSlowError) as exc:
            text = "no answer in time" if isinstance(exc, trio.TooSlowError) else str(exc)
            report(TradeStep(name=name, passed=False, detail=text))
            raise StepFailed(name, text) from None
        report(TradeStep(name=name, passed=True, detail=detail, latency_ms=(trio.current_time() - started) * 1000))
        return value

    watch = OrderWatch()
    ok = False
    async with trio.open_nursery() as nursery:
        try:

            async def arm() -> tuple[str, None]:
                nonlocal dms_armed
                await venue.set_dead_mans_switch(DMS_COUNTDOWN_S)
                dms_armed = True
                return f"armed, {DMS_COUNTDOWN_S} s countdown", None

            await step("arm dead man's switch", arm)

            async def subscribe() -> tuple[str, None]:
                stream_cm = venue.account_stream()
                stream = await nursery_enter(nursery, stream_cm)
                await nursery.start(watch.run, stream)
                await watch.snapshot.wait()
                return "subscribed, open-order snapshot received", None

            await step("account stream", subscribe)

            async def market_terms() -> tuple[str, tuple[MarketInfo, Decimal]]:
                infos = {m.name: m for m in await venue.get_markets([market])}
                info = infos.get(market)
                if info is None:
                    raise StepFailed("market", f"{market} is not listed")
                fees = {f.market: f for f in await venue.get_fees([market])}
                maker = fees[market].maker if market in fees else Decimal(0)
                return f"{market} min size {info.spec.min_order_size}, maker fee {maker}", (info, maker)

            info, maker = await step("market", market_terms)
            spec = info.spec
            lots = spec.min_order_lots

            def order(ext: str, ticks: int, cancel_id: str | None = None) -> OrderRequest:
                return OrderRequest(
                    market=market, side=Side.BUY, qty=spec.lots_to_qty(lots), price=spec.ticks_to_price(ticks),
                    external_id=ext, expiry_ms=epoch_ms() + ORDER_EXPIRY_S * 1000, max_fee_rate=maker,
                    post_only=True, cancel_id=cancel_id,
                )

            first = ids.next(market, Side.BUY)
            first_ticks = far_bid_ticks(info, depth=Decimal("0.5"))

            async def place() -> tuple[str, None]:
                placed.append(first)
                await venue.place_order(order(first, first_ticks))
                seen = await watch.wait_status("place", first, ("NEW",), step_timeout_s)
                return f"post-only BUY {seen.qty} @ {seen.price} is NEW on the account stream", None

            await step("place", place)

            second = ids.next(market, Side.BUY)
            second_ticks = far_bid_ticks(info, depth=Decimal("0.6"))

            async def replace() -> tuple[str, None]:
                placed.append(second)
                await venue.place_order(order(second, second_ticks, cancel_id=first))
                seen = await watch.wait_status("replace", second, ("NEW",), step_timeout_s)
                # The replaced order should end CANCELLED/ORDER_REPLACED (inferred from the
                # enum, SPEC §4.8); should the venue not report it, the listing decides.
                try:
                    await watch.wait_status("replace", first, ("CANCELLED",), step_timeout_s / 3)
                    old = "the old order is CANCELLED"
                except StepFailed:
                    if await _ours_open(venue, market, [first]):
                        raise
                    old = "the old order is no longer open (no stream update for it)"
                return f"replaced by {seen.qty} @ {seen.price}; {old}", None

            await step("replace", replace)

            async def cancel() -> tuple[str, None]:
                await venue.cancel_order_by_external_id(second)
                await watch.wait_status("cancel", second, ("CANCELLED",), step_timeout_s)
                return "CANCELLED on the account stream", None

            await step("cancel", cancel)

            async def none_open() -> tuple[str, None]:
                left = await _ours_open(venue, market, placed)
                if left:
                    raise StepFailed("nothing open", f"still open at the venue: {', '.join(left)}")
                return f"none of the {len(placed)} orders placed is open (listed at the venue)", None

            await step("nothing open", none_open)

            async def disarm() -> tuple[str, None]:
                nonlocal dms_armed
                await venue.set_dead_mans_switch(0)
                dms_armed = False
                return "disarmed", None

            await step("disarm dead man's switch", disarm)
            ok = True
        except StepFailed:
            ok = False
        finally:
            nursery.cancel_scope.cancel()
    if not ok:
        await _clean_up(venue, market, placed, dms_armed, report)
    return ok


async def nursery_enter(nursery: trio.Nursery, manager: Any) -> Any:
    """Enter an async context manager inside a task of `nursery` and keep it open until the
    nursery is cancelled; returns what it yields."""
    entered: list[Any] = []

    async def hold(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with manager as value:
            entered.append(value)
            task_status.started()
            await trio.sleep_forever()

    await nursery.start(hold)
    return entered[0]


async def _ours_open(venue: Any, market: str, placed: Sequence[str]) -> list[str]:
    """Which of `placed` the venue lists as open; raises VenueError when it cannot list."""
    wanted = set(placed)
    return [o.external_id for o in await venue.get_open_orders(market) if o.external_id in wanted]


async def _clean_up(
    venue: Any, market: str, placed: list[str], dms_armed: bool, report: Callable[[TradeStep], None]
) -> None:
    """After a failure: cancel what we placed and confirm it; disarm the DMS only then."""
    with trio.CancelScope(shield=True):
        left: list[str] | None = None
        started = trio.current_time()
        with trio.move_on_after(STEP_TIMEOUT_S):
            while True:
                try:
                    if placed:
                        await venue.mass_cancel(external_ids=placed)
                    left = await _ours_open(venue, market, placed)
                except VenueError:
                    left = None  # could not confirm: keep trying while time allows
                if left == []:
                    break
                await trio.sleep(0.5)
        took = (trio.current_time() - started) * 1000
        if left == []:
            report(TradeStep(name="clean-up", passed=True, latency_ms=took,
                             detail=f"cancelled what the test placed ({len(placed)} orders); none open"))
        else:
            detail = "could not confirm our orders gone" if left is None else f"still open: {', '.join(left)}"
            report(TradeStep(name="clean-up", passed=False, latency_ms=took,
                             detail=f"{detail}; the dead man's switch stays armed as the backstop"))
            return
        if dms_armed:
            try:
                await venue.set_dead_mans_switch(0)
                report(TradeStep(name="clean-up", passed=True, detail="dead man's switch disarmed"))
            except VenueError as exc:
                report(TradeStep(name="clean-up", passed=False,
                                 detail=f"disarming the dead man's switch failed ({exc}); nothing is open"))
