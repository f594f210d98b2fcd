"""Venue JSON → adapter types: every real payload in the fixtures parses; odd input is named."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extmm.domain.units import Side
from extmm.venue.endpoints import SN_MAIN
from extmm.venue.errors import MalformedResponse, OrderRejected
from extmm.venue.parse import (
    decimal_of,
    int_of,
    loads,
    parse_account_update,
    parse_balance,
    parse_funding_payment,
    parse_markets,
    parse_order,
    parse_placed_order,
    parse_position,
    parse_signing_domain,
    parse_stream_message,
    unwrap_envelope,
)
from extmm.venue.types import BalanceUpdate, OrdersUpdate, PositionsUpdate, StreamMessage, TradesUpdate
from tests.apifixtures import FIXTURES


def fixture(name: str) -> Any:
    return loads((FIXTURES / name).read_bytes())


# Every fixture file is either parsed below or listed here with the reason it is not a
# response the adapter reads; a new fixture file fails `test_every_fixture_is_accounted_for`.
NOT_ADAPTER_INPUT = {
    "sdkgen_new_order_postonly_buy_btc_mainnet.json": "request body (tests/venue/test_venue_signing.py)",
    "sdkgen_new_order_replace_sell_btc_mainnet.json": "request body (tests/venue/test_venue_signing.py)",
    "sdk_test_new_order_sell_testnet.json": "request body (tests/venue/test_venue_signing.py)",
    "rpc_v2_control_responses_btc_mainnet.json": "RPC v2 control replies; the adapter speaks v1",
    "rest_info_orderbook_nvda.trimmed.json": "bare `data` of the REST book, which the adapter does not call",
}
STREAM_FRAMES = sorted(
    p.name
    for p in FIXTURES.glob("*.json")
    if p.name.startswith(("v1_", "rpc_v2_", "sdk_test_v1_", "sdk_test_rpc_"))
)
STREAM_FRAMES = [n for n in STREAM_FRAMES if n not in NOT_ADAPTER_INPUT]
REST_BODIES = {
    "rest_info_markets_btc_mainnet.json",
    "sdk_test_market_btc_usd.json",
    "rest_user_balance_ok.json",
    "rest_error_1006_internal.json",
}


def test_every_fixture_is_accounted_for() -> None:
    names = {p.name for p in FIXTURES.glob("*.json")}
    assert names, "fixtures directory is empty"
    assert names == set(NOT_ADAPTER_INPUT) | set(STREAM_FRAMES) | REST_BODIES


# -- REST ---------------------------------------------------------------------------------------


def test_mainnet_market_object_parses_with_its_grid() -> None:
    [btc] = parse_markets(unwrap_envelope(fixture("rest_info_markets_btc_mainnet.json")))
    assert (btc.name, btc.active, btc.status) == ("BTC-USD", True, "ACTIVE")
    assert btc.spec.tick_size == Decimal("1")
    assert btc.spec.lot_size == Decimal("0.00001")
    assert btc.spec.min_order_size == Decimal("0.0001")
    assert btc.spec.max_num_orders == 200
    assert btc.raw["l2Config"]["syntheticId"] == "0x4254432d3600000000000000000000"


def test_old_sdk_market_object_without_status_parses() -> None:
    [btc] = parse_markets(unwrap_envelope(fixture("sdk_test_market_btc_usd.json")))
    assert btc.name == "BTC-USD"
    assert btc.status == "ACTIVE"  # absent: derived from `active`


def test_balance_body_parses_to_decimals() -> None:
    balance = parse_balance(unwrap_envelope(fixture("rest_user_balance_ok.json")))
    assert balance.balance == Decimal("7.667333")
    assert balance.equity == Decimal("7.667333")
    assert balance.available_for_trade == Decimal("7.667333")
    assert balance.unrealised_pnl == Decimal("0")
    assert balance.updated_ms == 1762927892866


def test_error_envelope_raises_rejected_with_the_code() -> None:
    with pytest.raises(OrderRejected) as caught:
        unwrap_envelope(fixture("rest_error_1006_internal.json"), http_status=200)
    assert caught.value.code == 1006
    assert caught.value.venue_message == "Internal Server Error"
    assert caught.value.http_status == 200


@pytest.mark.parametrize(
    ("error", "code"),
    [({"code": "NOT_FOUND", "message": "x"}, "NOT_FOUND"), ({"code": "1140", "message": "x"}, 1140)],
)
def test_error_codes_may_be_strings(error: dict[str, Any], code: object) -> None:
    with pytest.raises(OrderRejected) as caught:
        unwrap_envelope({"status": "error", "error": error})
    assert caught.value.code == code


def test_status_is_case_insensitive_and_must_be_present() -> None:
    assert unwrap_envelope({"status": "ok", "data": [1]}) == [1]
    with pytest.raises(MalformedResponse, match="status"):
        unwrap_envelope({"data": []})
    with pytest.raises(MalformedResponse, match="status"):
        unwrap_envelope({"status": "MAYBE", "data": []})
    with pytest.raises(MalformedResponse, match="object"):
        unwrap_envelope([1, 2])


def test_non_json_is_malformed() -> None:
    with pytest.raises(MalformedResponse, match="not JSON"):
        loads(b"<html>502 Bad Gateway</html>")


ORDER = {
    "id": 9223372036854775808,  # 2^63: DOC26's example; must stay exact
    "accountId": 3004,
    "externalId": "extmm-abc-BTC-USD-b-000001",
    "market": "BTC-USD",
    "type": "LIMIT",
    "side": "BUY",
    "status": "TRIGGERED",  # DOC26-only value the SDK rejects
    "statusReason": "NEGATIVE_EQUITY",
    "price": "84000.000000",
    "averagePrice": None,
    "qty": "0.00100",
    "filledQty": "0",
    "reduceOnly": False,
    "postOnly": True,
    "createdTime": 1790425441925,
    "updatedTime": 1790425441926,
    "expireTime": 1790427600000,  # DOC26's name for expiryTime
    "timeInForce": "TOB",
    "someFutureField": {"x": 1},
}


def test_order_keeps_unknown_enums_and_exact_ids() -> None:
    order = parse_order(ORDER)
    assert order.id == 2**63
    assert order.status == "TRIGGERED"
    assert order.status_reason == "NEGATIVE_EQUITY"
    assert order.side is Side.BUY
    assert order.price == Decimal("84000")
    assert order.qty == Decimal("0.00100")
    assert order.expiry_ms == 1790427600000
    assert order.post_only is True
    assert order.average_price is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"qty": None}, "'qty'"),
        ({"price": "abc"}, "price"),
        ({"price": "NaN"}, "finite"),
        ({"side": "HOLD"}, "BUY or SELL"),
        ({"id": 1.5}, "integer"),
        ({"postOnly": "yes"}, "postOnly"),
    ],
)
def test_malformed_order_names_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedResponse, match=message):
        parse_order({**ORDER, **change})


def test_position_and_funding_payment_parse() -> None:
    position = parse_position(
        {
            "id": 1,
            "accountId": 2,
            "market": "ETH-USD",
            "status": "OPENED",
            "side": "SHORT",
            "leverage": "5",
            "size": "0.50",
            "value": "1500",
            "openPrice": "3000",
            "markPrice": "3001.5",
            "unrealisedPnl": "-0.75",
            "realisedPnl": "0",
            "createdTime": 1,
        }
    )
    assert position.signed_size == Decimal("-0.50")
    assert position.mark_price == Decimal("3001.5")

    payment = parse_funding_payment(  # DOC26 "Get funding payments" example
        {
            "id": 8341,
            "accountId": 3137,
            "market": "BNB-USD",
            "positionId": 1821237954501148672,
            "side": "LONG",
            "size": "1.116",
            "value": "560.77401888",
            "markPrice": "502.48568",
            "fundingFee": "0",
            "fundingRate": "0",
            "paidTime": 1723147241346,
        }
    )
    assert payment.market == "BNB-USD"
    assert payment.value == Decimal("560.77401888")
    assert payment.paid_ms == 1723147241346


def test_placed_order_and_signing_domain() -> None:
    placed = parse_placed_order({"id": 1811328331287359488, "externalId": "x-1"})
    assert (placed.id, placed.external_id) == (1811328331287359488, "x-1")
    domain = parse_signing_domain(
        {"name": "Perpetuals", "version": "v0", "chainId": "SN_MAIN", "revision": 1}
    )
    assert domain == SN_MAIN


# -- streams ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STREAM_FRAMES)
def test_every_stream_frame_fixture_has_a_valid_envelope(name: str) -> None:
    raw = fixture(name)
    message = parse_stream_message(raw)
    assert isinstance(message, StreamMessage)
    assert message.seq == raw["seq"]
    assert message.ts == raw["ts"]
    assert message.type == raw.get("type")
    assert message.data == raw["data"]


def test_public_trade_frames_have_no_type() -> None:
    message = parse_stream_message(fixture("v1_public_trades_btc.json"))
    assert message.type is None
    assert message.data[0]["i"] == 2104498657029001217


def test_account_snapshots_parse() -> None:
    orders = parse_account_update(parse_stream_message(fixture("v1_account_order_snapshot_empty.json")))
    balance = parse_account_update(parse_stream_message(fixture("v1_account_balance_snapshot.json")))
    positions = parse_account_update(parse_stream_message(fixture("v1_account_position_snapshot_empty.json")))
    assert orders == OrdersUpdate(orders=(), is_snapshot=True)
    assert positions == PositionsUpdate(positions=(), is_snapshot=True)
    assert isinstance(balance, BalanceUpdate) and balance.is_snapshot
    assert balance.balance.equity == Decimal("7.667333")


def test_account_trade_frame_parses_with_exact_ids() -> None:
    update = parse_account_update(parse_stream_message(fixture("sdk_test_v1_account_trade_message.json")))
    assert isinstance(update, TradesUpdate)
    assert update.is_snapshot is False
    [trade] = update.trades
    assert trade.id == 1811328331296018432
    assert trade.order_id == 1811328331287359488
    assert trade.side is Side.BUY
    assert trade.price == Decimal("58249.8")
    assert trade.fee == Decimal("0.029124")
    assert trade.is_taker is True


def test_account_order_update_and_ignored_types() -> None:
    frame = {"type": "ORDER", "data": {"orders": [ORDER]}, "ts": 1, "seq": 5}
    update = parse_account_update(parse_stream_message(frame))
    assert isinstance(update, OrdersUpdate) and not update.is_snapshot
    assert update.orders[0].external_id == ORDER["externalId"]
    deposit = {"type": "DEPOSIT", "data": {"deposits": []}, "ts": 1, "seq": 6}
    assert parse_account_update(parse_stream_message(deposit)) is None


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ([1, 2], "object"),
        ({"data": {}, "ts": 1}, "'seq'"),
        ({"ts": 1, "seq": 1}, "'data'"),
        ({"data": {}, "ts": 1, "seq": "x"}, "integer"),
        ({"data": {}, "ts": 1, "seq": 1, "error": "market not found"}, "error"),
        ({"type": 5, "data": {}, "ts": 1, "seq": 1}, "type"),
    ],
)
def test_malformed_stream_envelopes(frame: Any, message: str) -> None:
    with pytest.raises(MalformedResponse, match=message):
        parse_stream_message(frame)


def test_account_frame_with_bad_payload_is_malformed() -> None:
    bad = StreamMessage(type="BALANCE", data={"balance": {"balance": "x"}}, ts=1, seq=1)
    with pytest.raises(MalformedResponse, match="balance"):
        parse_account_update(bad)


# -- number readers ------------------------------------------------------------------------------------


@given(st.decimals(allow_nan=False, allow_infinity=False, places=8))
def test_decimal_strings_round_trip_exactly(value: Decimal) -> None:
    assert decimal_of(str(value), "x") == value
    assert loads(json.dumps({"v": str(value)}))["v"] == str(value)


@given(st.integers(min_value=0, max_value=2**64))
def test_ids_never_pass_through_float(value: int) -> None:
    assert int_of(loads(json.dumps({"id": value}))["id"], "id") == value
    assert int_of(str(value), "id") == value


def test_json_numbers_with_fractions_become_decimals() -> None:
    assert loads('{"p": 0.1}')["p"] == Decimal("0.1")
    with pytest.raises(MalformedResponse):
        decimal_of(True, "flag")
