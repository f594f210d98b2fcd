"""Order entry: accepting an admitted order (with replace, fault injection and reduce-only),
and the cancels of SPEC §4.9–4.10.

What the engine's module docstring (`extmm.sim.engine`) says about replace (`cancelId`),
reduce-only and cancelling closed or unknown orders is implemented here; the checks
before acceptance are `extmm.sim.admission`, matching is `extmm.sim.matching`.
"""

from __future__ import annotations

from collections.abc import Sequence

from extmm.sim.admission import Admitted
from extmm.sim.margin import reduces
from extmm.sim.matching import Matcher
from extmm.sim.model import CANCELLED, REJECTED, SimOrder, SimReject
from extmm.sim.world import World
from extmm.venue.types import PlacedOrder


class OrderEntry:
    """Accepts and cancels orders in a `World`; see the module docstring."""

    def __init__(self, world: World, matcher: Matcher) -> None:
        self.world = world
        self.matcher = matcher

    def accept(self, admitted: Admitted, *, force_reject: str | None = None) -> PlacedOrder:
        """Accept an admitted order and match it; returns the ack (the 200 of `POST /user/order`).

        `force_reject` (fault injection) rejects it in the engine with that status reason,
        like a matching-engine refusal after a 200 (a replaced order is cancelled all the
        same, as for a post-only cross).
        """
        world = self.world
        now = world.now
        account, m, intent = admitted.account, admitted.market, admitted.intent
        order = SimOrder(
            id=next(world.order_ids),
            account_id=account.info.id,
            client_id=account.info.client_id,
            external_id=intent.external_id,
            market=m.name,
            side=intent.side,
            type=intent.type,
            time_in_force=intent.time_in_force,
            price_ticks=admitted.ticks,
            qty_lots=admitted.lots,
            post_only=intent.post_only,
            reduce_only=intent.reduce_only,
            stp=intent.stp,
            fee_rate=intent.fee,
            expiry_ms=intent.expiry_ms,
            created_ms=now,
            updated_ms=now,
        )
        account.remember(order)
        ack = PlacedOrder(id=order.id, external_id=order.external_id)
        matcher = self.matcher
        if intent.cancel_id is not None:
            previous = admitted.previous
            if previous is None:
                matcher.close(order, REJECTED, "PREV_ORDER_NOT_FOUND")
                return ack
            if previous.market != m.name:
                matcher.close(order, REJECTED, "PREV_ORDER_CONFLICT")
                return ack
            matcher.close(previous, CANCELLED, "ORDER_REPLACED")
        if force_reject is not None:
            matcher.close(order, REJECTED, force_reject)
            return ack
        if order.reduce_only and not reduces(account, order):
            matcher.close(order, REJECTED, "REDUCE_ONLY_FAILED")
            return ack
        matcher.submit(m, order)
        matcher.classify_maker_fills(lambda _maker: "other")
        return ack

    def cancel(self, account_id: int, order_id: int) -> None:
        """`DELETE /user/order/{id}`; 404 if the account never had the order."""
        account = self.world.account(account_id)
        order = account.orders_by_id.get(order_id)
        if order is None:
            raise SimReject(404, f"order {order_id} not found", 404)
        if order.is_open:
            self.matcher.close(order, CANCELLED, None)

    def cancel_by_external_id(self, account_id: int, external_id: str) -> None:
        """`DELETE /user/order?externalId=`; 404 if the account never used the id."""
        account = self.world.account(account_id)
        if external_id not in account.orders_by_external:
            raise SimReject(404, f"order with externalId {external_id!r} not found", 404)
        order = account.open_by_external.get(external_id)
        if order is not None:
            self.matcher.close(order, CANCELLED, None)

    def mass_cancel(
        self,
        account_id: int,
        *,
        order_ids: Sequence[int] = (),
        external_ids: Sequence[str] = (),
        markets: Sequence[str] = (),
        cancel_all: bool = False,
    ) -> int:
        """`POST /user/order/massCancel`: cancels the union of the selections; returns how many."""
        account = self.world.account(account_id)
        ids = set(order_ids)
        externals = set(external_ids)
        market_set = set(markets)
        doomed = [
            o
            for o in account.open_orders.values()
            if cancel_all or o.id in ids or o.external_id in externals or o.market in market_set
        ]
        for order in doomed:
            self.matcher.close(order, CANCELLED, None)
        return len(doomed)
