"""REST-level checks of an order request body (SPEC §4.8), with the venue's error codes.

Parsing is lenient about representation (numbers may come as JSON strings or numbers,
optional flags may be missing) and strict about meaning: off-grid prices and sizes,
unknown enum values and out-of-range values raise `SimReject` with the code the venue
documents (SPEC §2.2). Code 400 (BadRequest) marks a body that is malformed as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from extmm.domain.units import MarketSpec, Side
from extmm.sim.model import SimReject

BAD_REQUEST = 400
NONCE_MAX = 2**31  # DOC26: a number in [1, 2^31]

SUPPORTED_TYPES = ("LIMIT", "MARKET")
UNSUPPORTED_TYPES = ("CONDITIONAL", "TPSL", "TWAP")
SUPPORTED_TIF = ("GTT", "IOC")
UNSUPPORTED_TIF = ("FOK", "TOB")
STP_LEVELS = ("DISABLED", "ACCOUNT", "CLIENT")


@attrs.frozen(kw_only=True)
class OrderIntent:
    """A structurally valid order request (grid and market checks come later)."""

    external_id: str
    market: str
    type: str
    side: Side
    qty: Decimal
    price: Decimal
    reduce_only: bool
    post_only: bool
    time_in_force: str
    expiry_ms: int
    fee: Decimal
    builder_fee: Decimal | None
    nonce: int
    stp: str
    cancel_id: str | None


def _bad(message: str) -> SimReject:
    return SimReject(BAD_REQUEST, message, 400)


def _decimal(body: Mapping[str, Any], key: str, *, required: bool = True) -> Decimal | None:
    value = body.get(key)
    if value is None:
        if required:
            raise _bad(f"{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _bad(f"{key} must be a decimal string, got {type(value).__name__}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise _bad(f"{key} is not a decimal: {value!r}") from None
    if not number.is_finite():
        raise _bad(f"{key} must be finite, got {value!r}")
    if number and number.adjusted() > 18:  # beyond any price or size; keeps Decimal arithmetic in range
        raise _bad(f"{key} is out of range: {value!r}")
    return number


def _bool(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"{key} must be a boolean, got {value!r}")
    return value


def _int(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if value is None:
        raise _bad(f"{key} is required")
    if isinstance(value, bool):
        raise _bad(f"{key} must be an integer, got {value!r}")
    try:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            return int(value)
        return int(str(value).strip())
    except ValueError:
        raise _bad(f"{key} must be an integer, got {value!r}") from None


def _string(body: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise _bad(f"{key} is required")
        return None
    if not isinstance(value, str) or not value:
        raise _bad(f"{key} must be a non-empty string, got {value!r}")
    return value


def parse_order_body(body: Any, *, strict_nonce: bool = True) -> OrderIntent:
    """Check the shape and enum values of a `POST /user/order` body."""
    if not isinstance(body, Mapping):
        raise _bad("order body must be a JSON object")
    external_id = _string(body, "id")
    assert external_id is not None
    if len(external_id) > 256:
        raise SimReject(1133, "id (externalId) is longer than 256 characters")
    market = _string(body, "market")
    assert market is not None
    order_type = _string(body, "type")
    if order_type in UNSUPPORTED_TYPES:
        raise SimReject(1133, f"order type {order_type} is not supported by the simulator")
    if order_type not in SUPPORTED_TYPES:
        raise _bad(f"type must be one of {', '.join(SUPPORTED_TYPES)}, got {order_type!r}")
    side_text = _string(body, "side")
    if side_text not in ("BUY", "SELL"):
        raise _bad(f"side must be BUY or SELL, got {side_text!r}")
    qty = _decimal(body, "qty")
    price = _decimal(body, "price")
    fee = _decimal(body, "fee")
    assert qty is not None and price is not None and fee is not None
    builder_fee = _decimal(body, "builderFee", required=False)
    tif = body.get("timeInForce") or "GTT"
    if tif in UNSUPPORTED_TIF:
        raise SimReject(1133, f"timeInForce {tif} is not supported (the venue documents GTT and IOC)")
    if tif not in SUPPORTED_TIF:
        raise _bad(f"timeInForce must be GTT or IOC, got {tif!r}")
    stp = body.get("selfTradeProtectionLevel") or "ACCOUNT"
    if stp not in STP_LEVELS:
        raise _bad(f"selfTradeProtectionLevel must be one of {', '.join(STP_LEVELS)}, got {stp!r}")
    nonce = _int(body, "nonce")
    if strict_nonce and not 1 <= nonce <= NONCE_MAX:
        raise SimReject(1133, f"nonce must be in [1, 2^31], got {nonce}")
    if not 0 <= nonce < 2**64:
        raise SimReject(1133, f"nonce out of range: {nonce}")
    post_only = _bool(body, "postOnly")
    if order_type == "MARKET" and (tif != "IOC" or post_only):
        raise SimReject(1139, "MARKET orders must be IOC and not post-only")
    if qty <= 0:
        raise SimReject(1120, f"qty must be positive, got {qty}")
    if price <= 0:
        raise SimReject(1141, f"price must be positive, got {price}")
    if fee < 0 or (builder_fee is not None and builder_fee < 0):
        raise SimReject(1128, "fee rates cannot be negative")
    return OrderIntent(
        external_id=external_id,
        market=market,
        type=order_type,
        side=Side(side_text),
        qty=qty,
        price=price,
        reduce_only=_bool(body, "reduceOnly"),
        post_only=post_only,
        time_in_force=tif,
        expiry_ms=_int(body, "expiryEpochMillis"),
        fee=fee,
        builder_fee=builder_fee,
        nonce=nonce,
        stp=stp,
        cancel_id=_string(body, "cancelId", required=False),
    )


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def grid_units(spec: MarketSpec, intent: OrderIntent) -> tuple[int, int]:
    """(price ticks, qty lots), or SimReject 1125/1124 (price) and 1123/1121/1120 (qty).

    Precision codes (1125, 1123) are for more decimals than the step has; the increment
    codes (1124, 1121) for values with allowed decimals that are still off the step.
    """
    if _decimals(intent.price) > _decimals(spec.tick_size):
        raise SimReject(1125, f"price {intent.price} has more decimals than the tick {spec.tick_size}")
    ticks = intent.price / spec.tick_size
    if ticks != ticks.to_integral_value():
        raise SimReject(1124, f"price {intent.price} is not a multiple of the tick {spec.tick_size}")
    if _decimals(intent.qty) > _decimals(spec.lot_size):
        raise SimReject(1123, f"qty {intent.qty} has more decimals than the size step {spec.lot_size}")
    lots = intent.qty / spec.lot_size
    if lots != lots.to_integral_value():
        raise SimReject(1121, f"qty {intent.qty} is not a multiple of the size step {spec.lot_size}")
    if intent.qty < spec.min_order_size:
        raise SimReject(1120, f"qty {intent.qty} is below the minimum order size {spec.min_order_size}")
    return int(ticks), int(lots)


def parse_mass_cancel(body: Any) -> dict[str, Any]:
    """`POST /user/order/massCancel` body → keyword arguments of `SimEngine.mass_cancel`."""
    if not isinstance(body, Mapping):
        raise _bad("mass cancel body must be a JSON object")

    def _list(key: str, kind: type) -> list[Any]:
        value = body.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise _bad(f"{key} must be a list")
        out: list[Any] = []
        for item in value:
            if kind is int:
                if isinstance(item, bool):
                    raise _bad(f"{key} must hold integers")
                try:
                    out.append(int(str(item)))
                except ValueError:
                    raise _bad(f"{key} must hold integers, got {item!r}") from None
            else:
                if not isinstance(item, str):
                    raise _bad(f"{key} must hold strings, got {item!r}")
                out.append(item)
        return out

    cancel_all = _bool(body, "cancelAll")
    order_ids = _list("orderIds", int)
    external_ids = _list("externalOrderIds", str)
    markets = _list("markets", str)
    if not (cancel_all or order_ids or external_ids or markets):
        raise _bad("mass cancel needs orderIds, externalOrderIds, markets or cancelAll=true")
    return {
        "order_ids": order_ids,
        "external_ids": external_ids,
        "markets": markets,
        "cancel_all": cancel_all,
    }
