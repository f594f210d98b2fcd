"""Stark order signatures: the SDK's vectors verify, anything tampered does not."""

from __future__ import annotations

import copy
import json
import random
from decimal import Decimal
from typing import Any

import pytest

from extmm.markets import bundled_markets
from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.model import SimReject
from extmm.sim.signing import (
    MAINNET_DOMAIN,
    TESTNET_DOMAIN,
    KeyPair,
    L2Config,
    OrderSigner,
    SignatureError,
    body_msg_hash,
    generate_key_pair,
    settlement_expiration_s,
    stark_amounts,
    verify_order_body,
)
from tests.apifixtures import FIXTURES

SDK_TEST_PUBLIC_KEY = 0x61C5E7E8339B7D56F197F54EA91B776776690E3232313DE0F2ECBD0EF76F466
SDK_TEST_VAULT = 10002


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def testnet_vector() -> tuple[dict[str, Any], L2Config]:
    body = load("sdk_test_new_order_sell_testnet.json")
    market = load("sdk_test_market_btc_usd.json")["data"][0]
    return body, L2Config.from_market(market)


@pytest.fixture(scope="module")
def mainnet_market() -> dict[str, Any]:
    return load("rest_info_markets_btc_mainnet.json")["data"][0]


MAINNET_VECTORS = [
    "sdkgen_new_order_postonly_buy_btc_mainnet.json",
    "sdkgen_new_order_replace_sell_btc_mainnet.json",
]


def test_sdk_testnet_vector_hash_equals_its_id_and_verifies(
    testnet_vector: tuple[dict[str, Any], L2Config],
) -> None:
    body, l2 = testnet_vector
    msg_hash = body_msg_hash(body, l2, TESTNET_DOMAIN, public_key=SDK_TEST_PUBLIC_KEY, vault=SDK_TEST_VAULT)
    assert msg_hash == int(body["id"])  # the SDK uses the hash as default external id
    verify_order_body(body, l2, TESTNET_DOMAIN, public_key=SDK_TEST_PUBLIC_KEY, vault=SDK_TEST_VAULT)


@pytest.mark.parametrize("name", MAINNET_VECTORS)
def test_sdk_generated_mainnet_vectors_verify_and_amounts_match(
    name: str, mainnet_market: dict[str, Any]
) -> None:
    body = load(name)
    l2 = L2Config.from_market(mainnet_market)
    verify_order_body(body, l2, MAINNET_DOMAIN, public_key=SDK_TEST_PUBLIC_KEY, vault=SDK_TEST_VAULT)
    amounts = stark_amounts(
        is_buy=body["side"] == "BUY",
        qty=Decimal(body["qty"]),
        price=Decimal(body["price"]),
        fee_rate=Decimal(body["fee"]),
        l2=l2,
    )
    debugging = body["debuggingAmounts"]
    assert (amounts.synthetic, amounts.collateral, amounts.fee) == (
        int(debugging["syntheticAmount"]),
        int(debugging["collateralAmount"]),
        int(debugging["feeAmount"]),
    )


def test_testnet_vector_amounts_round_like_the_sdk(testnet_vector: tuple[dict[str, Any], L2Config]) -> None:
    body, l2 = testnet_vector
    # SELL 0.001 @ 43445.1168: collateral 43445116.8 rounds down, fee 21722.5584 rounds up
    amounts = stark_amounts(
        is_buy=False,
        qty=Decimal(body["qty"]),
        price=Decimal(body["price"]),
        fee_rate=Decimal(body["fee"]),
        l2=l2,
    )
    assert (amounts.synthetic, amounts.collateral, amounts.fee) == (-1000, 43445116, 21723)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("price",), "84001"),
        (("qty",), "0.00101"),
        (("fee",), "0.0005"),
        (("nonce",), "123456790"),
        (("expiryEpochMillis",), 1790427601000),
        (("side",), "SELL"),
        (
            ("settlement", "signature", "s"),
            "0x4d5d8047e2ba3b9bafef2b4edbe6a5edad050820f1d77288b05ce4cffbd34a9",
        ),
    ],
)
def test_tampered_orders_fail_with_1101(
    path: tuple[str, ...], value: Any, mainnet_market: dict[str, Any]
) -> None:
    body = copy.deepcopy(load(MAINNET_VECTORS[0]))
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SignatureError) as info:
        verify_order_body(
            body,
            L2Config.from_market(mainnet_market),
            MAINNET_DOMAIN,
            public_key=SDK_TEST_PUBLIC_KEY,
            vault=SDK_TEST_VAULT,
        )
    assert info.value.code == 1101


def test_wrong_domain_key_or_vault(mainnet_market: dict[str, Any]) -> None:
    body = load(MAINNET_VECTORS[0])
    l2 = L2Config.from_market(mainnet_market)
    with pytest.raises(SignatureError) as info:
        verify_order_body(body, l2, TESTNET_DOMAIN, public_key=SDK_TEST_PUBLIC_KEY, vault=SDK_TEST_VAULT)
    assert info.value.code == 1101
    with pytest.raises(SignatureError) as info:
        verify_order_body(body, l2, MAINNET_DOMAIN, public_key=SDK_TEST_PUBLIC_KEY + 1, vault=SDK_TEST_VAULT)
    assert info.value.code == 1100
    with pytest.raises(SignatureError) as info:
        verify_order_body(body, l2, MAINNET_DOMAIN, public_key=SDK_TEST_PUBLIC_KEY, vault=SDK_TEST_VAULT + 1)
    assert info.value.code == 1102
    broken = copy.deepcopy(body)
    broken["settlement"]["signature"]["r"] = "not-hex"
    with pytest.raises(SignatureError):
        verify_order_body(broken, l2, MAINNET_DOMAIN, public_key=SDK_TEST_PUBLIC_KEY, vault=SDK_TEST_VAULT)
    for r, sig_s in (("0x0", "0x1"), ("0x1", "0x0"), (hex(2**251), "0x1")):
        broken["settlement"]["signature"] = {"r": r, "s": sig_s}
        with pytest.raises(SignatureError):
            verify_order_body(
                broken, l2, MAINNET_DOMAIN, public_key=SDK_TEST_PUBLIC_KEY, vault=SDK_TEST_VAULT
            )
    del broken["settlement"]
    with pytest.raises(SignatureError):
        verify_order_body(broken, l2, MAINNET_DOMAIN, public_key=SDK_TEST_PUBLIC_KEY, vault=SDK_TEST_VAULT)


def test_settlement_expiration_is_ceil_seconds_plus_14_days() -> None:
    assert settlement_expiration_s(1790427600000) == 1790427600 + 14 * 86400
    assert settlement_expiration_s(1790427600001) == 1790427601 + 14 * 86400


def test_key_pairs_are_deterministic_per_seed_and_hide_the_private_key() -> None:
    first = generate_key_pair(random.Random(7))
    assert first == generate_key_pair(random.Random(7))
    assert first != generate_key_pair(random.Random(8))
    assert hex(first.private_key) not in repr(first) and str(first.private_key) not in repr(first)
    assert KeyPair.from_private(first.private_key).public_key == first.public_key
    with pytest.raises(ValueError):
        KeyPair.from_private(0)


@pytest.mark.parametrize("expiry_ms", [1790427600000, 1790427600001, 1790427600999, 1790427612345])
def test_sdk_signer_round_trip(expiry_ms: int) -> None:
    key_pair = generate_key_pair(random.Random(expiry_ms))
    market = bundled_markets()["ETH-USD"]
    signer = OrderSigner(key_pair=key_pair, vault=42, market=market, domain=TESTNET_DOMAIN)
    body = signer.sign(
        external_id="x-1",
        side="BUY",
        qty=Decimal("0.123"),
        price=Decimal("2001.3"),
        expiry_ms=expiry_ms,
        nonce=99,
        fee=Decimal("0.00025"),
    )
    assert body["expiryEpochMillis"] == expiry_ms
    verify_order_body(
        body, L2Config.from_market(market), TESTNET_DOMAIN, public_key=key_pair.public_key, vault=42
    )
    assert "private" not in repr(signer).lower()


def test_engine_accepts_the_sdk_vectors_and_refuses_them_tampered(mainnet_market: dict[str, Any]) -> None:
    engine = SimEngine(
        EngineConfig(domain=MAINNET_DOMAIN, synthetic_flow=False, strict_nonce=True),
        start_ms=1790420000000,
        markets=[mainnet_market],
    )
    engine.set_mark_price("BTC-USD", Decimal("84050"))
    account = engine.create_account(public_key=SDK_TEST_PUBLIC_KEY, vault=SDK_TEST_VAULT).id
    impostor = engine.create_account(vault=SDK_TEST_VAULT).id  # same vault, other key

    bid = load(MAINNET_VECTORS[0])
    tampered = copy.deepcopy(bid)
    tampered["qty"] = "0.00200"
    with pytest.raises(SimReject) as info:
        engine.place_order(account, tampered, 1790420000001)
    assert (info.value.code, info.value.http_status) == (1101, 400)
    with pytest.raises(SimReject) as info:
        engine.place_order(impostor, bid, 1790420000001)
    assert info.value.code == 1100

    ack = engine.place_order(account, bid, 1790420000002)
    assert engine.get_order(account, ack.id).status == "NEW"
    # the replace vector names mm-ask-000001, which does not exist: accepted, then rejected
    ack = engine.place_order(account, load(MAINNET_VECTORS[1]), 1790420000003)
    state = engine.get_order(account, ack.id)
    assert (state.status, state.status_reason) == ("REJECTED", "PREV_ORDER_NOT_FOUND")
