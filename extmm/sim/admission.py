"""Order admission: the checks of `POST /user/order` (SPEC §4.8) against the market and
the account, in the venue's order, each refusal a `SimReject` with the venue's code.

The body's own shape is `extmm.sim.validation`; here come the market (1001 unknown,
1002 disabled), the grid, the maximum value (1122), the price band around the mark
(1141), the expiry window (1135), the fee (1128), the signature (1100–1102, SPEC §8.4),
a reused externalId (1134), the open-order cap (1126) and the margin (1140,
`extmm.sim.margin`). An admitted order may still be rejected by the engine afterwards
(post-only cross, reduce-only, a replace whose old order is gone).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from extmm.domain.units import Side
from extmm.sim.account import AccountState
from extmm.sim.margin import Margin
from extmm.sim.model import SimOrder, SimReject
from extmm.sim.signing import SignatureError, verify_order_body
from extmm.sim.validation import OrderIntent, grid_units, parse_order_body
from extmm.sim.world import SimMarket, World

UNCHECKED = object()  # `place_order(signature=...)`: no verdict given, check it there


class Admitted(NamedTuple):
    """An order that passed every REST-level check, ready to be accepted (a tuple: it is
    built on every order, and the hot path is measured)."""

    account: AccountState
    market: SimMarket
    intent: OrderIntent
    ticks: int
    lots: int
    previous: SimOrder | None  # the open order `cancelId` names, if any


class Admission:
    """The REST-level checks of a new order over a `World`; see the module docstring."""

    def __init__(self, world: World, margin: Margin) -> None:
        self.world = world
        self.margin = margin

    def check_signature(self, account_id: int, body: Mapping[str, Any]) -> SignatureError | None:
        """The signature verdict for an order body (None: valid, or not checkable yet —
        an unknown market or account is refused by `admit` itself). Reads only
        immutable configuration: safe to run in a worker thread."""
        world = self.world
        market = body.get("market")
        m = world.markets.get(market) if isinstance(market, str) else None
        account = world.accounts.get(account_id)
        if m is None or account is None:
            return None
        try:
            verify_order_body(
                body, m.l2, world.config.domain, public_key=account.info.public_key, vault=account.info.vault
            )
        except SignatureError as exc:
            return exc
        return None

    def admit(
        self, account_id: int, body: Mapping[str, Any], *, signature: SignatureError | None | object = UNCHECKED
    ) -> Admitted:
        """Run every check at the world's current time; raises the first refusal."""
        world = self.world
        config = world.config
        now = world.now
        account = world.account(account_id)
        intent = parse_order_body(body, strict_nonce=config.strict_nonce)
        m = world.markets.get(intent.market)
        if m is None:
            raise SimReject(1001, f"market {intent.market!r} not found")
        if not m.active:
            raise SimReject(1002, f"market {intent.market} is disabled")
        spec = m.spec
        ticks, lots = grid_units(spec, intent)
        value = intent.price * intent.qty
        max_value = m.max_market_value if intent.type == "MARKET" else spec.max_limit_order_value
        if value > max_value:
            raise SimReject(1122, f"order value {value} exceeds the maximum {max_value}")
        check_price_band(m, intent.type, intent.side, intent.price)
        if intent.expiry_ms <= now or intent.expiry_ms > now + config.max_expiry_ms:
            raise SimReject(1135, "expiryEpochMillis must be in the future and within the maximum expiration")
        maker_rate, taker_rate = world.fee_rates(account, m.name)
        required_fee = maker_rate if intent.post_only else taker_rate
        if intent.fee < required_fee:
            raise SimReject(1128, f"fee {intent.fee} is below the applicable rate {required_fee}")
        if config.verify_signatures:
            if signature is UNCHECKED:
                signature = self.check_signature(account_id, body)
            if isinstance(signature, SignatureError):
                raise SimReject(signature.code, str(signature))
        if intent.external_id in account.orders_by_external:
            raise SimReject(1134, f"duplicate order id {intent.external_id!r}")
        previous = account.open_by_external.get(intent.cancel_id) if intent.cancel_id is not None else None
        open_count = account.open_count(m.name)
        if previous is not None and previous.market == m.name:
            open_count -= 1
        if open_count >= spec.max_num_orders:
            raise SimReject(1126, f"at most {spec.max_num_orders} open orders per market")
        if config.check_margin and not intent.reduce_only:
            self.margin.check_order(account, m, intent.side, ticks * lots, previous)
        return Admitted(account=account, market=m, intent=intent, ticks=ticks, lots=lots, previous=previous)


def check_price_band(m: SimMarket, order_type: str, side: Side, price: Decimal) -> None:
    """1141 when a price is too far from the mark (MARKET: ±5 %; LIMIT: the market's cap/floor)."""
    mark = m.mark
    if mark <= 0:
        return
    if order_type == "MARKET":
        cap = floor = Decimal("0.05")
    else:
        cap, floor = m.spec.limit_price_cap, m.spec.limit_price_floor
    if side is Side.BUY and price > mark * (1 + cap):
        raise SimReject(1141, f"buy price {price} is above mark {mark} × (1 + {cap})")
    if side is Side.SELL and price < mark * (1 - floor):
        raise SimReject(1141, f"sell price {price} is below mark {mark} × (1 − {floor})")
