"""The simulator engine: matching, validation, replace, cancels, DMS, accounting, events, wire."""

from __future__ import annotations

import copy
import itertools
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from extmm.markets import bundled_markets
from extmm.sim import wire
from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.model import (
    BalanceEvent,
    MarkPriceEvent,
    OrderStateEvent,
    PositionEvent,
    PublicTradesEvent,
    SimReject,
    TradeEvent,
)
from extmm.sim.validation import parse_mass_cancel

T0 = 1_790_000_000_000
HOUR = 3_600_000
_nonce = itertools.count(1)


def make_engine(markets: list[dict[str, Any]] | None = None, **config: Any) -> SimEngine:
    cfg = EngineConfig(**{"synthetic_flow": False, "verify_signatures": False, **config})
    engine = SimEngine(cfg, start_ms=T0, markets=markets)
    if "BTC-USD" in engine.market_names():
        engine.set_mark_price("BTC-USD", Decimal("84000"))
    if "ETH-USD" in engine.market_names():
        engine.set_mark_price("ETH-USD", Decimal("2000"))
    engine.drain_events()
    return engine


def body(
    ext: str,
    side: str,
    price: str,
    qty: str,
    *,
    market: str = "BTC-USD",
    post_only: bool = False,
    tif: str = "GTT",
    order_type: str = "LIMIT",
    stp: str = "ACCOUNT",
    cancel_id: str | None = None,
    fee: str = "0.00025",
    expiry: int = T0 + HOUR,
    reduce_only: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": ext,
        "market": market,
        "type": order_type,
        "side": side,
        "qty": qty,
        "price": price,
        "reduceOnly": reduce_only,
        "postOnly": post_only,
        "timeInForce": tif,
        "expiryEpochMillis": expiry,
        "fee": fee,
        "nonce": str(next(_nonce)),
        "selfTradeProtectionLevel": stp,
        "settlement": {"signature": {"r": "0x1", "s": "0x1"}, "starkKey": "0x1", "collateralPosition": "1"},
    }
    if cancel_id is not None:
        out["cancelId"] = cancel_id
    return out


def order_events(events: list[Any], account_id: int | None = None) -> list[Any]:
    return [e.order for e in events if isinstance(e, OrderStateEvent) and account_id in (None, e.account_id)]


def status_of(engine: SimEngine, account_id: int, ext: str) -> tuple[str, str | None]:
    state = engine.orders_by_external_id(account_id, ext)[-1]
    return state.status, state.status_reason


@pytest.fixture
def engine() -> SimEngine:
    return make_engine()


# -- matching -------------------------------------------------------------------------------------


def test_price_priority_then_time_priority(engine: SimEngine) -> None:
    a, b, c, d = (engine.create_account().id for _ in range(4))
    engine.place_order(b, body("b1", "SELL", "84010", "0.00100"), T0 + 1)
    engine.place_order(c, body("c1", "SELL", "84005", "0.00100"), T0 + 2)
    engine.place_order(d, body("d1", "SELL", "84005", "0.00100"), T0 + 3)
    engine.drain_events()

    engine.place_order(a, body("a1", "BUY", "84010", "0.00150", tif="IOC"), T0 + 4)
    fills = [e.trade for e in engine.drain_events() if isinstance(e, TradeEvent)]
    maker_fills = [(f.account_id, f.price, f.qty) for f in fills if not f.is_taker]
    # the better price first; at 84005 the earlier order (c) before the later one (d)
    assert maker_fills == [
        (c, Decimal("84005"), Decimal("0.00100")),
        (d, Decimal("84005"), Decimal("0.00050")),
    ]
    assert status_of(engine, c, "c1") == ("FILLED", None)
    assert status_of(engine, d, "d1") == ("PARTIALLY_FILLED", None)
    assert status_of(engine, b, "b1") == ("NEW", None)
    taker = engine.orders_by_external_id(a, "a1")[0]
    assert taker.status == "FILLED" and taker.average_price == Decimal("84005")


def test_partial_fill_rests_remainder_with_average_price(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    engine.place_order(b, body("s1", "SELL", "84001", "0.00100"), T0)
    engine.place_order(b, body("s2", "SELL", "84003", "0.00100"), T0)
    engine.place_order(a, body("b1", "BUY", "84003", "0.00300"), T0 + 5)
    state = engine.orders_by_external_id(a, "b1")[0]
    assert state.status == "PARTIALLY_FILLED"
    assert state.filled_qty == Decimal("0.00200")
    assert state.average_price == Decimal("84002")
    bids, asks = engine.book_levels("BTC-USD")
    assert bids == [(84003, 100)] and asks == []
    assert [o.external_id for o in engine.open_orders(a)] == ["b1"]


def test_post_only_that_would_cross_is_rejected_and_not_placed(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    engine.place_order(b, body("s1", "SELL", "84001", "0.00100"), T0)
    engine.drain_events()
    ack = engine.place_order(a, body("b1", "BUY", "84001", "0.00100", post_only=True, fee="0"), T0 + 1)
    assert ack.external_id == "b1" and ack.id > 0
    orders = order_events(engine.drain_events(), a)
    assert [(o.status, o.status_reason) for o in orders] == [("REJECTED", "POST_ONLY_FAILED")]
    assert engine.book_levels("BTC-USD") == ([], [(84001, 100)])
    # one tick lower it rests
    engine.place_order(a, body("b2", "BUY", "84000", "0.00100", post_only=True, fee="0"), T0 + 2)
    assert status_of(engine, a, "b2") == ("NEW", None)


def test_ioc_and_market_remainders_are_cancelled(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    engine.place_order(b, body("s1", "SELL", "84001", "0.00100"), T0)
    engine.place_order(a, body("i1", "BUY", "84001", "0.00300", tif="IOC"), T0)
    state = engine.orders_by_external_id(a, "i1")[0]
    assert (state.status, state.status_reason, state.filled_qty, state.cancelled_qty) == (
        "CANCELLED",
        "NO_LIQUIDITY",
        Decimal("0.00100"),
        Decimal("0.00200"),
    )
    engine.place_order(a, body("m1", "BUY", "84100", "0.00100", tif="IOC", order_type="MARKET"), T0)
    assert status_of(engine, a, "m1") == ("CANCELLED", "NO_LIQUIDITY")
    assert engine.book_levels("BTC-USD") == ([], [])


def test_self_trade_protection_account_cancels_taker_remainder(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    engine.place_order(b, body("b-ask", "SELL", "84001", "0.00100"), T0)
    engine.place_order(a, body("a-ask", "SELL", "84002", "0.00100"), T0)
    engine.place_order(a, body("a-bid", "BUY", "84002", "0.00200", stp="ACCOUNT"), T0 + 1)
    taker = engine.orders_by_external_id(a, "a-bid")[0]
    # filled against b first, then stopped at its own order
    assert (taker.status, taker.status_reason) == ("CANCELLED", "SELF_TRADE_PROTECTION")
    assert taker.filled_qty == Decimal("0.00100") and taker.cancelled_qty == Decimal("0.00100")
    assert status_of(engine, a, "a-ask") == ("NEW", None)
    assert engine.book_levels("BTC-USD") == ([], [(84002, 100)])


def test_self_trade_protection_disabled_lets_an_account_trade_with_itself(engine: SimEngine) -> None:
    a = engine.create_account().id
    engine.place_order(a, body("ask", "SELL", "84001", "0.00100"), T0)
    engine.place_order(a, body("bid", "BUY", "84001", "0.00100", stp="DISABLED"), T0)
    assert status_of(engine, a, "ask") == ("FILLED", None)
    assert status_of(engine, a, "bid") == ("FILLED", None)
    assert engine.positions(a) == []  # bought and sold the same size


def test_self_trade_protection_client_level_spans_accounts_of_one_client(engine: SimEngine) -> None:
    a = engine.create_account(client_id=77).id
    b = engine.create_account(client_id=77).id
    engine.place_order(b, body("b-ask", "SELL", "84001", "0.00100"), T0)
    engine.place_order(a, body("a1", "BUY", "84001", "0.00100", stp="ACCOUNT"), T0)
    assert status_of(engine, a, "a1") == ("FILLED", None)  # different accounts: allowed
    engine.place_order(b, body("b-ask2", "SELL", "84001", "0.00100"), T0)
    engine.place_order(a, body("a2", "BUY", "84001", "0.00100", stp="CLIENT"), T0)
    assert status_of(engine, a, "a2") == ("CANCELLED", "SELF_TRADE_PROTECTION")
    assert status_of(engine, b, "b-ask2") == ("NEW", None)


# -- replace ------------------------------------------------------------------------------------------


def test_replace_cancels_old_with_order_replaced_and_places_new(engine: SimEngine) -> None:
    a = engine.create_account().id
    engine.place_order(a, body("q1", "BUY", "83990", "0.00100", post_only=True, fee="0"), T0)
    engine.drain_events()
    engine.place_order(
        a, body("q2", "BUY", "83995", "0.00100", post_only=True, fee="0", cancel_id="q1"), T0 + 1
    )
    orders = order_events(engine.drain_events(), a)
    assert [(o.external_id, o.status, o.status_reason) for o in orders] == [
        ("q1", "CANCELLED", "ORDER_REPLACED"),
        ("q2", "NEW", None),
    ]
    assert engine.book_levels("BTC-USD") == ([(83995, 100)], [])


def test_replace_failing_rest_validation_leaves_the_old_order(engine: SimEngine) -> None:
    a = engine.create_account().id
    engine.place_order(a, body("q1", "BUY", "83990", "0.00100", post_only=True, fee="0"), T0)
    engine.drain_events()
    with pytest.raises(SimReject) as info:
        engine.place_order(
            a, body("q2", "BUY", "83995.5", "0.00100", post_only=True, fee="0", cancel_id="q1"), T0
        )
    assert info.value.code == 1125
    assert engine.drain_events() == []
    assert status_of(engine, a, "q1") == ("NEW", None)
    # the refused id was never taken: it can be used again
    engine.place_order(a, body("q2", "BUY", "83995", "0.00100", post_only=True, fee="0", cancel_id="q1"), T0)
    assert status_of(engine, a, "q2") == ("NEW", None)


def test_replace_rejected_by_the_engine_cancels_both(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    engine.place_order(b, body("ask", "SELL", "84001", "0.00100"), T0)
    engine.place_order(a, body("q1", "BUY", "83990", "0.00100", post_only=True, fee="0"), T0)
    engine.drain_events()
    engine.place_order(a, body("q2", "BUY", "84001", "0.00100", post_only=True, fee="0", cancel_id="q1"), T0)
    orders = order_events(engine.drain_events(), a)
    assert [(o.external_id, o.status, o.status_reason) for o in orders] == [
        ("q1", "CANCELLED", "ORDER_REPLACED"),
        ("q2", "REJECTED", "POST_ONLY_FAILED"),
    ]
    assert engine.open_orders(a) == []


def test_replace_of_an_order_that_is_gone_rejects_the_new_one(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    engine.place_order(a, body("q1", "BUY", "84000", "0.00100", post_only=True, fee="0"), T0)
    engine.place_order(b, body("hit", "SELL", "84000", "0.00100"), T0 + 1)  # q1 filled
    engine.drain_events()
    engine.place_order(
        a, body("q2", "BUY", "83990", "0.00100", post_only=True, fee="0", cancel_id="q1"), T0 + 2
    )
    assert [(o.external_id, o.status, o.status_reason) for o in order_events(engine.drain_events(), a)] == [
        ("q2", "REJECTED", "PREV_ORDER_NOT_FOUND")
    ]
    engine.place_order(
        a, body("q3", "BUY", "83990", "0.00100", post_only=True, fee="0", cancel_id="never"), T0 + 3
    )
    assert status_of(engine, a, "q3") == ("REJECTED", "PREV_ORDER_NOT_FOUND")
    # another market's order: conflict, the old one stays
    engine.place_order(
        a, body("e1", "BUY", "1990.0", "0.010", market="ETH-USD", post_only=True, fee="0"), T0 + 4
    )
    engine.place_order(
        a, body("q4", "BUY", "83990", "0.00100", post_only=True, fee="0", cancel_id="e1"), T0 + 5
    )
    assert status_of(engine, a, "q4") == ("REJECTED", "PREV_ORDER_CONFLICT")
    assert status_of(engine, a, "e1") == ("NEW", None)


def test_replace_may_not_reuse_the_old_external_id(engine: SimEngine) -> None:
    a = engine.create_account().id
    engine.place_order(a, body("q1", "BUY", "83990", "0.00100", post_only=True, fee="0"), T0)
    with pytest.raises(SimReject) as info:
        engine.place_order(
            a, body("q1", "BUY", "83991", "0.00100", post_only=True, fee="0", cancel_id="q1"), T0
        )
    assert info.value.code == 1134
    assert status_of(engine, a, "q1") == ("NEW", None)


# -- cancels ------------------------------------------------------------------------------------------


def test_cancel_by_id_and_by_external_id(engine: SimEngine) -> None:
    a = engine.create_account().id
    ack1 = engine.place_order(a, body("c1", "BUY", "83990", "0.00100"), T0)
    engine.place_order(a, body("c2", "BUY", "83991", "0.00100"), T0)
    engine.drain_events()
    engine.cancel_order(a, ack1.id, T0 + 1)
    engine.cancel_order_by_external_id(a, "c2", T0 + 2)
    orders = order_events(engine.drain_events(), a)
    assert [(o.external_id, o.status, o.updated_ms) for o in orders] == [
        ("c1", "CANCELLED", T0 + 1),
        ("c2", "CANCELLED", T0 + 2),
    ]
    assert engine.book_levels("BTC-USD") == ([], [])
    # cancelling a closed order is acknowledged without effect; unknown ids are 404
    engine.cancel_order(a, ack1.id, T0 + 3)
    assert engine.drain_events() == []
    with pytest.raises(SimReject) as info:
        engine.cancel_order(a, 12345, T0 + 3)
    assert (info.value.code, info.value.http_status) == (404, 404)
    with pytest.raises(SimReject):
        engine.cancel_order_by_external_id(a, "nope", T0 + 3)


def test_cannot_cancel_another_accounts_order(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    ack = engine.place_order(a, body("c1", "BUY", "83990", "0.00100"), T0)
    with pytest.raises(SimReject):
        engine.cancel_order(b, ack.id, T0)
    assert status_of(engine, a, "c1") == ("NEW", None)


def _place_grid(engine: SimEngine, account: int) -> None:
    engine.place_order(account, body("btc-1", "BUY", "83990", "0.00100"), T0)
    engine.place_order(account, body("btc-2", "SELL", "84010", "0.00100"), T0)
    engine.place_order(account, body("eth-1", "BUY", "1990.0", "0.010", market="ETH-USD"), T0)
    engine.place_order(account, body("eth-2", "SELL", "2010.0", "0.010", market="ETH-USD"), T0)


@pytest.mark.parametrize(
    ("request_body", "cancelled"),
    [
        ({"externalOrderIds": ["btc-1", "eth-2", "unknown"]}, {"btc-1", "eth-2"}),
        ({"markets": ["ETH-USD"], "cancelAll": False}, {"eth-1", "eth-2"}),
        ({"cancelAll": True}, {"btc-1", "btc-2", "eth-1", "eth-2"}),
    ],
)
def test_mass_cancel_variants(engine: SimEngine, request_body: dict[str, Any], cancelled: set[str]) -> None:
    a, other = engine.create_account().id, engine.create_account().id
    _place_grid(engine, a)
    engine.place_order(other, body("other", "BUY", "83980", "0.00100"), T0)
    count = engine.mass_cancel(a, T0 + 1, **parse_mass_cancel(request_body))
    assert count == len(cancelled)
    still_open = {o.external_id for o in engine.open_orders(a)}
    assert still_open == {"btc-1", "btc-2", "eth-1", "eth-2"} - cancelled
    assert [o.external_id for o in engine.open_orders(other)] == ["other"]


def test_mass_cancel_by_exchange_ids(engine: SimEngine) -> None:
    a = engine.create_account().id
    _place_grid(engine, a)
    ids = {o.external_id: o.id for o in engine.open_orders(a)}
    engine.mass_cancel(
        a, T0, **parse_mass_cancel({"orderIds": [ids["btc-2"], ids["eth-1"]], "cancelAll": False})
    )
    assert {o.external_id for o in engine.open_orders(a)} == {"btc-1", "eth-2"}


def test_mass_cancel_needs_a_selection() -> None:
    with pytest.raises(SimReject) as info:
        parse_mass_cancel({"cancelAll": False})
    assert info.value.http_status == 400


# -- expiry, limits, validation ----------------------------------------------------------------------------


def test_orders_expire_at_their_expiry_time(engine: SimEngine) -> None:
    a = engine.create_account().id
    engine.place_order(a, body("short", "BUY", "83990", "0.00100", expiry=T0 + 5_000), T0)
    engine.place_order(a, body("long", "BUY", "83991", "0.00100", expiry=T0 + 60_000), T0)
    engine.drain_events()
    engine.advance(T0 + 4_999)
    assert engine.drain_events() == []
    engine.advance(T0 + 30_000)
    orders = order_events(engine.drain_events(), a)
    assert [(o.external_id, o.status, o.updated_ms) for o in orders] == [("short", "EXPIRED", T0 + 5_000)]
    assert engine.book_levels("BTC-USD") == ([(83991, 100)], [])


def test_max_open_orders_per_market() -> None:
    market = copy.deepcopy(bundled_markets()["BTC-USD"])
    market["tradingConfig"]["maxNumOrders"] = "3"
    engine = make_engine([market])
    a = engine.create_account().id
    for i in range(3):
        engine.place_order(a, body(f"o{i}", "BUY", str(83990 - i), "0.00100"), T0)
    with pytest.raises(SimReject) as info:
        engine.place_order(a, body("o3", "BUY", "83980", "0.00100"), T0)
    assert info.value.code == 1126
    # a replace at the limit frees its own slot
    engine.place_order(a, body("o4", "BUY", "83985", "0.00100", cancel_id="o0"), T0)
    assert len(engine.open_orders(a)) == 3


def _custom_grid_market() -> dict[str, Any]:
    market = copy.deepcopy(bundled_markets()["BTC-USD"])
    market["name"] = "TST-USD"
    market["tradingConfig"].update(
        {"minPriceChange": "0.5", "minOrderSizeChange": "0.002", "minOrderSize": "0.004"}
    )
    return market


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"price": "84000.5"}, 1125),  # finer than the 1 USD tick
        ({"qty": "0.000015"}, 1123),  # finer than the 0.00001 lot
        ({"qty": "0.00005"}, 1120),  # below the 0.0001 minimum
        ({"qty": "200.00000"}, 1122),  # 16.8 M USD > maxLimitOrderValue 15 M
        ({"price": "88201"}, 1141),  # buy above mark·1.05 = 88200
        ({"expiryEpochMillis": T0 - 1}, 1135),
        ({"expiryEpochMillis": T0 + 91 * 24 * HOUR}, 1135),
        ({"fee": "0.0001"}, 1128),  # below the taker rate for a non-post-only order
        ({"market": "DOGE-USD"}, 1001),
        ({"type": "MARKET"}, 1139),  # GTT market order
        ({"timeInForce": "FOK"}, 1133),
        ({"nonce": str(2**31 + 1)}, 1133),
        ({"side": "HOLD"}, 400),
        ({"qty": "lots"}, 400),
        ({"expiryEpochMillis": None}, 400),
    ],
)
def test_rest_level_validation_codes(engine: SimEngine, overrides: dict[str, Any], code: int) -> None:
    a = engine.create_account(balance=Decimal(10_000_000)).id
    request = body("v1", "BUY", "84000", "0.00100")
    request.update(overrides)
    with pytest.raises(SimReject) as info:
        engine.place_order(a, request, T0)
    assert info.value.code == code
    assert info.value.http_status in (400, 404)
    assert engine.drain_events() == [] and engine.open_orders(a) == []


def test_price_band_for_sells_and_market_orders(engine: SimEngine) -> None:
    a = engine.create_account().id
    with pytest.raises(SimReject) as info:
        engine.place_order(a, body("s", "SELL", "79799", "0.00100"), T0)  # mark·0.95 = 79800
    assert info.value.code == 1141
    engine.place_order(a, body("s-ok", "SELL", "79800", "0.00100"), T0)
    with pytest.raises(SimReject) as info:
        engine.place_order(a, body("m", "BUY", "88201", "0.00100", tif="IOC", order_type="MARKET"), T0)
    assert info.value.code == 1141


def test_increment_codes_on_a_coarse_grid() -> None:
    engine = make_engine([_custom_grid_market()])
    engine.set_mark_price("TST-USD", Decimal("84000"))
    a = engine.create_account().id
    with pytest.raises(SimReject) as info:
        engine.place_order(a, body("p", "BUY", "84000.3", "0.004", market="TST-USD"), T0)
    assert info.value.code == 1124
    with pytest.raises(SimReject) as info:
        engine.place_order(a, body("q", "BUY", "84000.5", "0.005", market="TST-USD"), T0)
    assert info.value.code == 1121
    engine.place_order(a, body("ok", "BUY", "84000.5", "0.00600", market="TST-USD"), T0)
    assert engine.open_orders(a)[0].qty == Decimal("0.006")


def test_duplicate_external_id_of_open_or_closed_order(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    engine.place_order(a, body("dup", "BUY", "83990", "0.00100"), T0)
    with pytest.raises(SimReject) as info:
        engine.place_order(a, body("dup", "BUY", "83991", "0.00100"), T0)
    assert info.value.code == 1134
    engine.cancel_order_by_external_id(a, "dup", T0)
    with pytest.raises(SimReject):
        engine.place_order(a, body("dup", "BUY", "83991", "0.00100"), T0)
    engine.place_order(b, body("dup", "BUY", "83991", "0.00100"), T0)  # ids are per account


def test_order_cost_beyond_equity_is_refused(engine: SimEngine) -> None:
    a = engine.create_account(balance=Decimal(100)).id  # leverage 10 → 1,000 USD of orders
    engine.place_order(a, body("ok", "BUY", "84000", "0.01000"), T0)  # 840 USD
    with pytest.raises(SimReject) as info:
        engine.place_order(a, body("big", "BUY", "84000", "0.00300"), T0)  # +252 USD
    assert info.value.code == 1140
    # the other side does not add margin while it is smaller than the long side
    engine.place_order(a, body("ask", "SELL", "84100", "0.00500"), T0)


def test_unknown_api_key_is_401(engine: SimEngine) -> None:
    info = engine.create_account(api_key="key-1")
    assert engine.authenticate("key-1").id == info.id
    with pytest.raises(SimReject) as exc:
        engine.authenticate("key-2")
    assert exc.value.http_status == 401
    assert "key-1" not in repr(info)


# -- dead man's switch ------------------------------------------------------------------------------------


def test_dms_arm_reset_expiry_cancels_all_orders_and_keeps_positions(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    engine.place_order(b, body("ask", "SELL", "84001", "0.00100"), T0)
    engine.place_order(a, body("take", "BUY", "84001", "0.00100"), T0)  # a is long 0.001
    _place_grid(engine, a)
    engine.set_dms(a, 10, T0)
    engine.set_dms(a, 10, T0 + 8_000)  # reset: now due at T0 + 18 s
    engine.drain_events()
    engine.advance(T0 + 17_999)
    assert engine.drain_events() == [] and len(engine.open_orders(a)) == 4
    engine.advance(T0 + 20_000)
    orders = order_events(engine.drain_events(), a)
    assert {(o.external_id, o.status, o.updated_ms) for o in orders} == {
        (ext, "CANCELLED", T0 + 18_000) for ext in ("btc-1", "btc-2", "eth-1", "eth-2")
    }
    assert engine.open_orders(a) == []
    assert [(p.market, p.side, p.size) for p in engine.positions(a)] == [
        ("BTC-USD", "LONG", Decimal("0.00100"))
    ]
    assert engine.dms_deadline(a) is None  # fired once, then disarmed


def test_dms_disarm_with_zero(engine: SimEngine) -> None:
    a = engine.create_account().id
    _place_grid(engine, a)
    engine.set_dms(a, 5, T0)
    engine.set_dms(a, 0, T0 + 1_000)
    engine.advance(T0 + 60_000)
    assert len(engine.open_orders(a)) == 4
    with pytest.raises(SimReject):
        engine.set_dms(a, -1, T0 + 60_000)


def test_dms_is_per_account(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    _place_grid(engine, a)
    _place_grid(engine, b)
    engine.set_dms(a, 1, T0)
    engine.advance(T0 + 5_000)
    assert engine.open_orders(a) == [] and len(engine.open_orders(b)) == 4


# -- accounting ---------------------------------------------------------------------------------------------


def _cash_flow(engine: SimEngine, account: int) -> Fraction:
    """Equity change rebuilt from fills and marks alone, independent of the ledger."""
    flow = Fraction(0)
    position: dict[str, Fraction] = {}
    for t in engine.trades(account):
        signed = Fraction(t.qty) * (1 if t.side.value == "BUY" else -1)
        flow -= signed * Fraction(t.price) + Fraction(t.fee)
        position[t.market] = position.get(t.market, Fraction(0)) + signed
    for market, qty in position.items():
        flow += qty * Fraction(engine.mark_price(market))
    for payment in engine.funding_payments(account):
        flow -= Fraction(payment.funding_fee)
    return flow


def test_fees_funding_and_pnl_add_up_exactly(engine: SimEngine) -> None:
    maker = engine.create_account(balance=Decimal(50_000)).id
    taker = engine.create_account(balance=Decimal(50_000)).id
    engine.set_funding_rate("BTC-USD", Decimal("0.0001"))
    # maker buys 0.003 at two prices, taker sells into it
    engine.place_order(maker, body("m1", "BUY", "84000", "0.00200", post_only=True, fee="0"), T0)
    engine.place_order(maker, body("m2", "BUY", "83990", "0.00100", post_only=True, fee="0"), T0)
    engine.place_order(taker, body("t1", "SELL", "83990", "0.00300"), T0 + 1)
    # 0.00025 × 168.00 = 0.042 and 0.00025 × 83.99 = 0.0209975 → rounded up to 0.020998
    assert sorted(f.fee for f in engine.trades(taker)) == [Decimal("0.020998"), Decimal("0.042000")]
    assert all(f.fee == 0 for f in engine.trades(maker))
    # hour boundary: funding at mark 84,100; longs pay
    engine.set_mark_price("BTC-USD", Decimal("84100"), T0 + 2)
    boundary = (T0 // HOUR + 1) * HOUR
    engine.advance(boundary + 1)
    [payment] = engine.funding_payments(maker)
    assert payment.funding_fee == Decimal("0.025230")  # 0.003 × 84,100 × 0.0001
    assert payment.paid_ms == boundary and payment.side == "LONG"
    assert engine.funding_payments(taker)[0].funding_fee == Decimal("-0.025230")
    # partial close at a profit, then more trades with a new mark
    engine.place_order(taker, body("t2", "BUY", "84200", "0.00100", post_only=True, fee="0"), boundary + 2)
    engine.place_order(maker, body("m3", "SELL", "84200", "0.00200"), boundary + 3)
    engine.place_order(taker, body("t3", "BUY", "84300", "0.00100"), boundary + 4)
    engine.set_mark_price("BTC-USD", Decimal("84050.123456"), boundary + 5)
    for account in (maker, taker):
        ledger = engine.ledger(account)
        change = ledger.equity - ledger.deposits
        assert change == ledger.realised_pnl + ledger.unrealised_pnl - ledger.fees_paid - ledger.funding_paid
        assert change == _cash_flow(engine, account)
        balance = engine.balance(account)
        assert balance.equity == wire_round(ledger.equity)
    # the maker sold 0.002 at 84,200 (half as taker, half as maker) against its average entry 83,996.67
    assert engine.ledger(maker).realised_pnl == Fraction("0.002") * (84200 - Fraction(2 * 84000 + 83990, 3))


def wire_round(value: Fraction) -> Decimal:
    return Decimal(round(value * 10**6)).scaleb(-6).quantize(Decimal("0.000001"))


def test_fill_emits_order_trade_position_balance_per_account(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    engine.place_order(b, body("ask", "SELL", "84001", "0.00100"), T0)
    engine.drain_events()
    engine.place_order(a, body("bid", "BUY", "84001", "0.00100"), T0 + 1)
    events = engine.drain_events()
    kinds = [(type(e).__name__, getattr(e, "account_id", None)) for e in events]
    assert kinds == [
        ("OrderStateEvent", b),
        ("TradeEvent", b),
        ("OrderStateEvent", a),
        ("TradeEvent", a),
        ("PositionEvent", b),
        ("BalanceEvent", b),
        ("PositionEvent", a),
        ("BalanceEvent", a),
        ("PublicTradesEvent", None),
    ]
    position = next(e.position for e in events if isinstance(e, PositionEvent) and e.account_id == a)
    assert (position.side, position.size, position.open_price) == (
        "LONG",
        Decimal("0.00100"),
        Decimal("84001"),
    )
    balance = next(e.balance for e in events if isinstance(e, BalanceEvent) and e.account_id == a)
    assert balance.balance == Decimal("10000") - Decimal("0.021001")  # taker fee, rounded up
    [prints] = [e.trades for e in events if isinstance(e, PublicTradesEvent)]
    assert [(t.side.value, t.price, t.qty) for t in prints] == [("BUY", Decimal("84001"), Decimal("0.00100"))]


def test_book_deltas_rebuild_the_snapshot(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    engine.place_order(a, body("b1", "BUY", "83990", "0.00100"), T0)
    engine.place_order(a, body("b2", "BUY", "83990", "0.00200"), T0)
    engine.place_order(b, body("a1", "SELL", "84010", "0.00300"), T0)
    engine.drain_book_changes()
    before = engine.book_snapshot("BTC-USD")
    engine.place_order(b, body("hit", "SELL", "83990", "0.00150", tif="IOC"), T0 + 1)
    engine.cancel_order_by_external_id(b, "a1", T0 + 2)
    engine.place_order(b, body("a2", "SELL", "84020", "0.00100"), T0 + 3)
    [delta] = engine.drain_book_changes()
    rendered = wire.book_delta(delta)
    assert rendered["b"] == [{"q": "-0.00150", "p": "83990", "c": "0.00150"}]
    assert rendered["a"] == [
        {"q": "-0.00300", "p": "84010", "c": "0.00000"},
        {"q": "0.00100", "p": "84020", "c": "0.00100"},
    ]
    bids = {lvl.price: lvl.qty for lvl in before.bids}
    for change in delta.bids:
        assert bids.get(change.price, Decimal(0)) + change.delta == change.qty
        bids[change.price] = change.qty
    after = engine.book_snapshot("BTC-USD")
    assert {p: q for p, q in bids.items() if q} == {lvl.price: lvl.qty for lvl in after.bids}
    assert engine.drain_book_changes() == []


def test_reduce_only_must_reduce(engine: SimEngine) -> None:
    a = engine.create_account().id
    engine.place_order(a, body("r1", "SELL", "84100", "0.00100", reduce_only=True), T0)
    assert status_of(engine, a, "r1") == ("REJECTED", "REDUCE_ONLY_FAILED")


def test_forced_engine_rejection_for_fault_drills(engine: SimEngine) -> None:
    a = engine.create_account().id
    ack = engine.place_order(
        a, body("x", "BUY", "83990", "0.00100", post_only=True, fee="0"), T0, force_reject="UNKNOWN"
    )
    assert engine.get_order(a, ack.id).status == "REJECTED"
    assert engine.book_levels("BTC-USD") == ([], [])
    engine.place_order(a, body("y", "BUY", "83990", "0.00100", post_only=True, fee="0"), T0)
    engine.drain_events()
    engine.place_order(
        a,
        body("z", "BUY", "83991", "0.00100", post_only=True, fee="0", cancel_id="y"),
        T0,
        force_reject="POST_ONLY_FAILED",
    )
    assert [(o.external_id, o.status, o.status_reason) for o in order_events(engine.drain_events(), a)] == [
        ("y", "CANCELLED", "ORDER_REPLACED"),
        ("z", "REJECTED", "POST_ONLY_FAILED"),
    ]


def test_fire_dms_now(engine: SimEngine) -> None:
    a = engine.create_account().id
    _place_grid(engine, a)
    assert engine.fire_dms(a, T0 + 1) is False  # not armed: nothing happens
    assert len(engine.open_orders(a)) == 4
    engine.set_dms(a, 60, T0 + 2)
    assert engine.fire_dms(a, T0 + 3) is True
    assert engine.open_orders(a) == [] and engine.dms_deadline(a) is None


def test_book_changes_accumulate_per_market_until_drained(engine: SimEngine) -> None:
    a = engine.create_account().id
    engine.drain_book_changes()
    engine.place_order(a, body("b1", "BUY", "83990", "0.00100"), T0)
    engine.place_order(a, body("e1", "BUY", "1990.0", "0.010", market="ETH-USD"), T0)
    btc = engine.drain_book_delta("BTC-USD")
    assert [(c.price, c.delta, c.qty) for c in btc.bids] == [
        (Decimal("83990"), Decimal("0.00100"), Decimal("0.00100"))
    ]
    engine.place_order(a, body("e2", "BUY", "1990.0", "0.020", market="ETH-USD"), T0 + 1)
    eth = engine.drain_book_delta("ETH-USD")  # both ETH orders, drained late, in one change
    assert [(c.price, c.delta, c.qty) for c in eth.bids] == [
        (Decimal("1990.0"), Decimal("0.030"), Decimal("0.030"))
    ]
    assert engine.drain_book_delta("BTC-USD").bids == () and engine.drain_book_changes() == []
    assert engine.account_by_api_key("nope") is None
    assert engine.account_by_api_key(engine.account_info(a).api_key) == engine.account_info(a)


# -- determinism with flow ------------------------------------------------------------------------------------


def _run_flow_session(seed: int) -> list[Any]:
    engine = SimEngine(EngineConfig(seed=seed, verify_signatures=False), start_ms=T0)
    a = engine.create_account().id
    out: list[Any] = []
    for i in range(30):
        now = T0 + 2_000 * (i + 1)
        mid = engine.mid("BTC-USD")
        engine.place_order(
            a, body(f"s{seed}-{i}", "BUY", str(int(mid) - 5), "0.00100", post_only=True, fee="0"), now
        )
        for event in engine.drain_events():
            if isinstance(event, MarkPriceEvent | PublicTradesEvent | OrderStateEvent | TradeEvent):
                out.append(event)
    out.append(engine.book_snapshot("BTC-USD", depth=20))
    return [_strip_seed(e) for e in out]


def _strip_seed(event: Any) -> Any:
    return repr(event).replace("s1-", "sX-").replace("s2-", "sX-")


def test_same_seed_same_world_other_seed_other_world() -> None:
    first, again = _run_flow_session(1), _run_flow_session(1)
    assert first == again
    assert first != _run_flow_session(2)


# -- wire shapes, checked with the SDK's own models ------------------------------------------------------------


def test_wire_objects_parse_with_the_sdk_models(engine: SimEngine) -> None:
    from x10.models.balance import BalanceModel
    from x10.models.fee import TradingFeeModel
    from x10.models.market import MarketModel
    from x10.models.order import OpenOrderModel
    from x10.models.position import PositionModel
    from x10.models.trade import AccountTradeModel, PublicTradeModel

    a, b = engine.create_account().id, engine.create_account().id
    engine.place_order(b, body("ask", "SELL", "84001", "0.00200"), T0)
    engine.place_order(a, body("bid", "BUY", "84001", "0.00100"), T0)
    for state in engine.open_orders(b) + engine.order_history(a):
        parsed = OpenOrderModel.model_validate(wire.order(state))
        assert parsed.external_id == state.external_id and parsed.qty == state.qty
    [fill] = engine.trades(a)
    assert AccountTradeModel.model_validate(wire.trade(fill)).price == Decimal("84001")
    assert "externalOrderId" in wire.trade(fill, stream=True)
    [position] = engine.positions(a)
    assert PositionModel.model_validate(wire.position(position)).size == Decimal("0.001")
    assert BalanceModel.model_validate(wire.balance(engine.balance(a))).balance == Decimal("9999.978999")
    for fee in engine.fees(a):
        TradingFeeModel.model_validate(wire.fee(fee))
    for name in engine.market_names():
        market = MarketModel.model_validate(
            wire.market(engine.market_object(name), engine.market_stats(name))
        )
        assert market.name == name
    [print_] = engine.public_trades("BTC-USD")
    assert PublicTradeModel.model_validate(wire.public_trade(print_)).qty == Decimal("0.001")
    snapshot = wire.book_snapshot(engine.book_snapshot("BTC-USD"))
    assert snapshot == {
        "t": "SNAPSHOT",
        "m": "BTC-USD",
        "b": [],
        "a": [{"p": "84001", "q": "0.00100"}],
        "d": "f",
    }
    assert wire.error(1101, "bad") == {"status": "ERROR", "error": {"code": 1101, "message": "bad"}}


# -- bench ------------------------------------------------------------------------------------------------------


def test_bench_sim_orders_signed_by_the_sdk_are_all_accepted() -> None:
    from extmm.research.bench.sim import run_pass

    result = run_pass(seconds=0.05, verify=True, seed=1)
    assert result["actions"] > 0 and result["accepted"] > 0
    assert result["refused"] == 0  # every SDK-signed body passed the engine's verification
    assert result["actions"] == result["places"] + result["replaces"] + result["cancels"]


def test_balance_margin_follows_the_venue_formula(engine: SimEngine) -> None:
    a, b = engine.create_account().id, engine.create_account().id
    engine.place_order(a, body("bid", "BUY", "84000", "0.00100"), T0)  # 84 USD of buys
    engine.place_order(a, body("ask", "SELL", "84100", "0.00300"), T0)  # 252.3 USD of sells
    balance = engine.balance(a)
    # max(|0 + 84|, |0 − 252.3|) / leverage 10
    assert balance.initial_margin == Decimal("25.230000")
    assert balance.available_for_trade == Decimal("10000") - Decimal("25.23")
    engine.place_order(b, body("lift", "BUY", "84100", "0.00100"), T0 + 1)  # a is now short 0.001
    engine.set_mark_price("BTC-USD", Decimal("84200"), T0 + 2)
    balance = engine.balance(a)
    assert balance.unrealised_pnl == Decimal("-0.100000")  # short 0.001 from 84,100, mark 84,200
    assert balance.equity == balance.balance + balance.unrealised_pnl
    # position −84.2; buys 84 → |−0.2|; sells 168.2 → |−252.4| → 25.24
    assert balance.initial_margin == Decimal("25.240000")
    assert balance.exposure == Decimal("84.200000")


# -- malformed input never escapes as anything but SimReject -----------------------------------------------------

_json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
_field_values = (
    _json_scalars
    | st.sampled_from(
        ["84000", "0.00100", "1e999999", "-1", "NaN", "0x1", "BUY", "SELL", "IOC", "MARKET", ""]
    )
    | st.lists(_json_scalars, max_size=2)
    | st.dictionaries(
        st.sampled_from(["signature", "starkKey", "collateralPosition", "r", "s"]), _json_scalars
    )
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(overrides={"qty": "1e999999"})
@example(overrides={"price": "1e-999999", "qty": "1E+5"})
@example(overrides={"fee": "1e999999", "builderFee": "-1"})
@example(overrides={"nonce": 2**70, "expiryEpochMillis": 10**30})
@example(overrides={"settlement": {"signature": None, "starkKey": "0x0"}})
@given(overrides=st.dictionaries(st.sampled_from(sorted(body("x", "BUY", "84000", "0.001"))), _field_values))
def test_garbage_order_bodies_are_refused_cleanly(overrides: dict[str, Any]) -> None:
    for verify in (False, True):
        engine = make_engine(verify_signatures=verify)
        a = engine.create_account().id
        request = body("x", "BUY", "84000", "0.00100")
        request.update(overrides)
        try:
            engine.place_order(a, request, T0)
        except SimReject as exc:
            assert exc.http_status in (400, 404) and exc.message
