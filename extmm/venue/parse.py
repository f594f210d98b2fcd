"""Venue JSON → `extmm.venue.types`: lenient about what may vary, strict about what matters.

Unknown enum values (SPEC §10: TRIGGERED, NEGATIVE_EQUITY…) and extra fields pass through
as raw strings; numbers arrive as decimal strings and become Decimal, ids stay exact ints.
Anything that is not the shape we rely on raises `MalformedResponse` naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar, overload

import orjson

from extmm.domain.units import Side
from extmm.markets import spec_from_market
from extmm.venue.endpoints import SigningDomain
from extmm.venue.errors import MalformedResponse, OrderRejected
from extmm.venue.types import (
    AccountUpdate,
    BalanceInfo,
    BalanceUpdate,
    FeeRates,
    FundingPayment,
    MarketInfo,
    OrderInfo,
    OrdersUpdate,
    PlacedOrder,
    PositionInfo,
    PositionsUpdate,
    StreamMessage,
    TradeInfo,
    TradesUpdate,
)

T = TypeVar("T")
_MISSING: Any = object()


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def loads_stream(text: str | bytes) -> Any:
    """Parse a stream frame fast (orjson); venue numbers are strings, so nothing is lost.

    Falls back to `loads` for what orjson refuses (e.g. integers beyond 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return loads(text)


def loads(text: str | bytes) -> Any:
    """Parse JSON; decimals that arrive as JSON numbers stay exact (Decimal, not float)."""
    try:
        return json.loads(text, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedResponse(f"not JSON: {exc}; body starts {_show(text[:60])}") from None


# -- field readers ------------------------------------------------------------------------


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedResponse(f"{what}: expected an object, got {_show(value)}")
    return value


def _field(obj: Mapping[str, Any], key: str, what: str, default: Any) -> Any:
    value = obj.get(key)
    if value is None:
        if default is _MISSING:
            raise MalformedResponse(f"{what}: missing field {key!r}")
        return default
    return value


def decimal_of(value: Any, what: str) -> Decimal:
    """A venue number (usually a string) as a finite Decimal."""
    if isinstance(value, bool):
        raise MalformedResponse(f"{what}: expected a decimal, got {_show(value)}")
    try:
        if isinstance(value, Decimal):
            number = value
        elif isinstance(value, str | int):
            number = Decimal(value)
        elif isinstance(value, float):
            number = Decimal(repr(value))
        else:
            raise InvalidOperation
    except InvalidOperation:
        raise MalformedResponse(f"{what}: expected a decimal, got {_show(value)}") from None
    if not number.is_finite():
        raise MalformedResponse(f"{what}: expected a finite decimal, got {_show(value)}")
    return number


def int_of(value: Any, what: str) -> int:
    """An id or timestamp: JSON int (up to ~2^63), or a string of digits. Never via float."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    raise MalformedResponse(f"{what}: expected an integer, got {_show(value)}")


def _dec(obj: Mapping[str, Any], key: str, what: str, default: Any = _MISSING) -> Decimal:
    value = _field(obj, key, what, default)
    return value if value is default else decimal_of(value, f"{what}.{key}")


def _int(obj: Mapping[str, Any], key: str, what: str, default: Any = _MISSING) -> int:
    value = _field(obj, key, what, default)
    return value if value is default else int_of(value, f"{what}.{key}")


@overload
def _str(obj: Mapping[str, Any], key: str, what: str, default: str = ...) -> str: ...
@overload
def _str(obj: Mapping[str, Any], key: str, what: str, default: None) -> str | None: ...
def _str(obj: Mapping[str, Any], key: str, what: str, default: Any = _MISSING) -> str | None:
    value = _field(obj, key, what, default)
    if value is None or isinstance(value, str):  # None only as the caller's default
        return value
    raise MalformedResponse(f"{what}.{key}: expected a string, got {_show(value)}")


def _bool(obj: Mapping[str, Any], key: str, what: str, default: Any = _MISSING) -> bool:
    value = _field(obj, key, what, default)
    if not isinstance(value, bool):
        raise MalformedResponse(f"{what}.{key}: expected true/false, got {_show(value)}")
    return value


def _side(obj: Mapping[str, Any], key: str, what: str) -> Side:
    raw = _str(obj, key, what)
    try:
        return Side(raw.upper())
    except ValueError:
        raise MalformedResponse(f"{what}.{key}: expected BUY or SELL, got {_show(raw)}") from None


def parse_list(data: Any, parse_item: Callable[[Any], T], what: str) -> list[T]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise MalformedResponse(f"{what}: expected a list, got {_show(data)}")
    return [parse_item(item) for item in data]


# -- REST envelope --------------------------------------------------------------------------


def unwrap_envelope(body: Any, *, http_status: int | None = None, allow_missing_data: bool = False) -> Any:
    """The `data` of `{"status":"OK","data":…}`; an ERROR envelope raises OrderRejected.

    Status is compared case-insensitively (DOC26 prose writes `ok`/`error`, SPEC §2.2).
    """
    envelope = _obj(body, "response")
    status = envelope.get("status")
    if not isinstance(status, str):
        raise MalformedResponse(f"response: missing 'status' in {_show(body)}")
    status = status.upper()
    if status == "ERROR":
        code, message = error_details(envelope)
        raise OrderRejected(code, message, http_status)
    if status != "OK":
        raise MalformedResponse(f"response: unexpected status {_show(status)}")
    if "data" not in envelope and not allow_missing_data:
        raise MalformedResponse("response: status OK without 'data'")
    return envelope.get("data")


def error_details(envelope: Mapping[str, Any]) -> tuple[int | str | None, str]:
    """(code, message) of an error body; the code may be an int or a string (SPEC §2.2)."""
    error = envelope.get("error")
    if isinstance(error, Mapping):
        code = error.get("code")
        if isinstance(code, str) and code.lstrip("-").isdigit():
            code = int(code)
        elif not isinstance(code, int | str) or isinstance(code, bool):
            code = None
        message = error.get("message")
        return code, message if isinstance(message, str) else ""
    if isinstance(error, str):
        return None, error
    return None, ""


# -- public ---------------------------------------------------------------------------------


def parse_market(value: Any) -> MarketInfo:
    obj = _obj(value, "market")
    name = _str(obj, "name", "market")
    what = f"market {name}"
    active = _bool(obj, "active", what, default=True)
    status = _str(obj, "status", what, default="ACTIVE" if active else "DISABLED")
    tc = _obj(obj.get("tradingConfig"), f"{what}.tradingConfig")
    for key in ("minPriceChange", "minOrderSizeChange", "minOrderSize"):
        _dec(tc, key, f"{what}.tradingConfig")
    try:
        spec = spec_from_market(dict(obj))
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise MalformedResponse(f"{what}: bad tradingConfig ({exc})") from None
    return MarketInfo(name=name, active=active, status=status, spec=spec, raw=dict(obj))


def parse_markets(data: Any) -> list[MarketInfo]:
    return parse_list(data, parse_market, "markets")


def parse_signing_domain(value: Any) -> SigningDomain:
    """`GET /info/starknet` data; `revision` arrives as a number there, a string in the SDK."""
    obj = _obj(value, "starknet domain")
    revision = _field(obj, "revision", "starknet domain", _MISSING)
    if isinstance(revision, bool) or not isinstance(revision, int | str | Decimal):
        raise MalformedResponse(f"starknet domain.revision: unexpected {_show(revision)}")
    return SigningDomain(
        name=_str(obj, "name", "starknet domain"),
        version=_str(obj, "version", "starknet domain"),
        chain_id=_str(obj, "chainId", "starknet domain"),
        revision=str(revision),
    )


# -- private --------------------------------------------------------------------------------


def parse_fee_rates(value: Any) -> FeeRates:
    obj = _obj(value, "fees")
    return FeeRates(
        market=_str(obj, "market", "fees"),
        maker=_dec(obj, "makerFeeRate", "fees"),
        taker=_dec(obj, "takerFeeRate", "fees"),
    )


def parse_balance(value: Any) -> BalanceInfo:
    obj = _obj(value, "balance")
    return BalanceInfo(
        balance=_dec(obj, "balance", "balance"),
        equity=_dec(obj, "equity", "balance"),
        available_for_trade=_dec(obj, "availableForTrade", "balance"),
        unrealised_pnl=_dec(obj, "unrealisedPnl", "balance", Decimal(0)),
        updated_ms=_int(obj, "updatedTime", "balance", 0),
    )


def parse_position(value: Any) -> PositionInfo:
    obj = _obj(value, "position")
    market = _str(obj, "market", "position")
    what = f"position {market}"
    return PositionInfo(
        market=market,
        side=_str(obj, "side", what).upper(),
        size=abs(_dec(obj, "size", what)),
        open_price=_dec(obj, "openPrice", what, Decimal(0)),
        mark_price=_dec(obj, "markPrice", what, Decimal(0)),
        unrealised_pnl=_dec(obj, "unrealisedPnl", what, Decimal(0)),
        realised_pnl=_dec(obj, "realisedPnl", what, Decimal(0)),
        value=_dec(obj, "value", what, Decimal(0)),
    )


def parse_order(value: Any) -> OrderInfo:
    obj = _obj(value, "order")
    order_id = _int(obj, "id", "order")
    what = f"order {order_id}"
    expiry = obj.get("expiryTime", obj.get("expireTime"))  # SDK vs DOC26 name (SPEC §10)
    average = obj.get("averagePrice")
    return OrderInfo(
        id=order_id,
        external_id=_str(obj, "externalId", what, ""),
        market=_str(obj, "market", what),
        side=_side(obj, "side", what),
        type=_str(obj, "type", what, "LIMIT"),
        status=_str(obj, "status", what),
        status_reason=_str(obj, "statusReason", what, None),
        price=_dec(obj, "price", what, Decimal(0)),  # absent on some MARKET/TPSL orders
        qty=_dec(obj, "qty", what),
        filled_qty=_dec(obj, "filledQty", what, Decimal(0)),
        average_price=None if average is None else decimal_of(average, f"{what}.averagePrice"),
        post_only=_bool(obj, "postOnly", what, False),
        reduce_only=_bool(obj, "reduceOnly", what, False),
        created_ms=_int(obj, "createdTime", what, 0),
        updated_ms=_int(obj, "updatedTime", what, 0),
        expiry_ms=None if expiry is None else int_of(expiry, f"{what}.expiryTime"),
    )


def parse_trade(value: Any) -> TradeInfo:
    obj = _obj(value, "trade")
    trade_id = _int(obj, "id", "trade")
    what = f"trade {trade_id}"
    return TradeInfo(
        id=trade_id,
        order_id=_int(obj, "orderId", what),
        external_order_id=_str(obj, "externalOrderId", what, None),
        market=_str(obj, "market", what),
        side=_side(obj, "side", what),
        price=_dec(obj, "price", what),
        qty=_dec(obj, "qty", what),
        value=_dec(obj, "value", what, Decimal(0)),
        fee=_dec(obj, "fee", what, Decimal(0)),
        is_taker=_bool(obj, "isTaker", what, False),
        trade_type=_str(obj, "tradeType", what, "TRADE"),
        created_ms=_int(obj, "createdTime", what, 0),
    )


def parse_funding_payment(value: Any) -> FundingPayment:
    obj = _obj(value, "funding payment")
    market = _str(obj, "market", "funding payment")
    what = f"funding payment {market}"
    return FundingPayment(
        market=market,
        side=_str(obj, "side", what, "").upper(),
        size=_dec(obj, "size", what, Decimal(0)),
        value=_dec(obj, "value", what, Decimal(0)),
        funding_fee=_dec(obj, "fundingFee", what),
        funding_rate=_dec(obj, "fundingRate", what, Decimal(0)),
        mark_price=_dec(obj, "markPrice", what, Decimal(0)),
        paid_ms=_int(obj, "paidTime", what, 0),
    )


def parse_placed_order(value: Any) -> PlacedOrder:
    obj = _obj(value, "placed order")
    return PlacedOrder(
        id=_int(obj, "id", "placed order"), external_id=_str(obj, "externalId", "placed order")
    )


# -- streams --------------------------------------------------------------------------------


def parse_stream_message(value: Any) -> StreamMessage:
    """Check a v1 envelope `{"type"?, "data", "ts", "seq", "error"?}`; `data` stays as JSON."""
    obj = _obj(value, "stream frame")
    error = obj.get("error")
    if error:
        raise MalformedResponse(f"stream frame carries an error: {_show(error)}")
    if "data" not in obj:
        raise MalformedResponse("stream frame: missing field 'data'")
    kind = obj.get("type")
    if kind is not None and not isinstance(kind, str):
        raise MalformedResponse(f"stream frame.type: expected a string, got {_show(kind)}")
    return StreamMessage(
        type=kind,
        data=obj["data"],
        ts=_int(obj, "ts", "stream frame"),
        seq=_int(obj, "seq", "stream frame"),
    )


def parse_account_update(message: StreamMessage) -> AccountUpdate | None:
    """ORDER / TRADE / POSITION / BALANCE frames; None for types a market maker ignores."""
    kind = (message.type or "").upper()
    if kind not in ("ORDER", "TRADE", "POSITION", "BALANCE"):
        return None
    data = _obj(message.data, f"account {kind} frame data")
    snapshot = data.get("isSnapshot")
    is_snapshot = snapshot if isinstance(snapshot, bool) else False
    if kind == "ORDER":
        orders = parse_list(data.get("orders"), parse_order, "account orders")
        return OrdersUpdate(orders=tuple(orders), is_snapshot=is_snapshot)
    if kind == "TRADE":
        trades = parse_list(data.get("trades"), parse_trade, "account trades")
        return TradesUpdate(trades=tuple(trades), is_snapshot=is_snapshot)
    if kind == "POSITION":
        positions = parse_list(data.get("positions"), parse_position, "account positions")
        return PositionsUpdate(positions=tuple(positions), is_snapshot=is_snapshot)
    return BalanceUpdate(balance=parse_balance(data.get("balance")), is_snapshot=is_snapshot)
