"""Order signing against the SDK vectors, nonces, credentials hygiene, external ids, `bench sign`."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extmm.domain.units import Side
from extmm.markets import bundled_markets
from extmm.research.bench import sign as bench_sign
from extmm.venue.endpoints import SN_MAIN, SN_SEPOLIA
from extmm.venue.signing import (
    NONCE_MAX,
    NONCE_MIN,
    Credentials,
    ExternalIdFactory,
    NonceSource,
    OrderSigner,
    dumps,
    expiry_datetime,
    is_ours,
)
from extmm.venue.types import OrderRequest
from tests.apifixtures import FIXTURES

PRIVATE_KEY = "0x7a7ff6fd3cab02ccdcd4a572563f5976f8976899b03a39773795a3c486d4986"  # SDK public test pair
PUBLIC_KEY = "0x61c5e7e8339b7d56f197f54ea91b776776690e3232313de0f2ecbd0ef76f466"
CREDENTIALS = Credentials(
    api_key="test-api-key-123", vault=10002, stark_private_key=PRIVATE_KEY, stark_public_key=PUBLIC_KEY
)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def mainnet_signer() -> OrderSigner:
    signer = OrderSigner(CREDENTIALS, SN_MAIN)
    signer.add_market(fixture("rest_info_markets_btc_mainnet.json")["data"][0])
    return signer


EXPIRY_MS = 1790427600000  # 2026-09-26T13:00:00Z, the fixtures' expiry


def test_post_only_buy_is_byte_identical_to_the_sdk_vector(mainnet_signer: OrderSigner) -> None:
    order = OrderRequest(
        market="BTC-USD",
        side=Side.BUY,
        qty=Decimal("0.00100"),
        price=Decimal("84000"),
        external_id="mm-bid-000001",
        expiry_ms=EXPIRY_MS,
        max_fee_rate=Decimal("0"),
    )
    expected = fixture("sdkgen_new_order_postonly_buy_btc_mainnet.json")
    assert mainnet_signer.sign_json(order, nonce=123456789) == dumps(expected)


def test_replace_sell_is_byte_identical_to_the_sdk_vector(mainnet_signer: OrderSigner) -> None:
    order = OrderRequest(
        market="BTC-USD",
        side=Side.SELL,
        qty=Decimal("0.00250"),
        price=Decimal("84150"),
        external_id="mm-ask-000002",
        expiry_ms=EXPIRY_MS,
        max_fee_rate=Decimal("0.00025"),
        cancel_id="mm-ask-000001",
    )
    expected = fixture("sdkgen_new_order_replace_sell_btc_mainnet.json")
    assert mainnet_signer.sign_json(order, nonce=987654321) == dumps(expected)


def test_sdk_testnet_vector_with_an_old_market_object_and_sub_second_expiry() -> None:
    # The SDK's own test market lacks fields its 2.6.0 model requires (SPEC §3.1); the
    # expiry is not a whole second, which the SDK's float path can get wrong by 1 ms.
    signer = OrderSigner(CREDENTIALS, SN_SEPOLIA)
    signer.add_market(fixture("sdk_test_market_btc_usd.json")["data"][0])
    expected = fixture("sdk_test_new_order_sell_testnet.json")
    order = OrderRequest(
        market="BTC-USD",
        side=Side.SELL,
        qty=Decimal(expected["qty"]),
        price=Decimal(expected["price"]),
        external_id=expected["id"],  # the SDK's default id: the decimal order hash
        expiry_ms=expected["expiryEpochMillis"],
        max_fee_rate=Decimal(expected["fee"]),
        post_only=False,
    )
    body = signer.sign(order, nonce=int(expected["nonce"]))
    assert body == {k: v for k, v in expected.items() if v is not None}


def test_nonce_comes_from_the_source_and_changes_the_signature(mainnet_signer: OrderSigner) -> None:
    signer = OrderSigner(CREDENTIALS, SN_MAIN, nonces=NonceSource(start=NONCE_MAX))
    signer.add_market(bundled_markets()["BTC-USD"])
    order = OrderRequest(
        market="BTC-USD",
        side=Side.BUY,
        qty=Decimal("0.001"),
        price=Decimal("84000"),
        external_id="x-1",
        expiry_ms=EXPIRY_MS,
        max_fee_rate=Decimal("0"),
    )
    first, second = signer.sign(order), signer.sign(order)
    assert (first["nonce"], second["nonce"]) == (str(NONCE_MAX), str(NONCE_MIN))  # wraps inside the range
    assert first["settlement"]["signature"] != second["settlement"]["signature"]
    with pytest.raises(ValueError, match="nonce"):
        signer.sign(order, nonce=2**31)


def test_unregistered_market_and_unknown_enums_are_refused(mainnet_signer: OrderSigner) -> None:
    order = OrderRequest(
        market="ETH-USD",
        side=Side.BUY,
        qty=Decimal("0.01"),
        price=Decimal("3000"),
        external_id="x-2",
        expiry_ms=EXPIRY_MS,
        max_fee_rate=Decimal("0"),
    )
    with pytest.raises(KeyError, match="ETH-USD"):
        mainnet_signer.sign(order)
    bad_tif = OrderRequest(
        market="BTC-USD",
        side=Side.BUY,
        qty=Decimal("0.001"),
        price=Decimal("84000"),
        external_id="x-3",
        expiry_ms=EXPIRY_MS,
        max_fee_rate=Decimal("0"),
        time_in_force="FOREVER",
    )
    with pytest.raises(ValueError, match="x-3"):
        mainnet_signer.sign(bad_tif)


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_expiry_conversion_is_exact_to_the_millisecond(expiry_ms: int) -> None:
    moment = expiry_datetime(expiry_ms)
    assert (moment - expiry_datetime(0)) // timedelta(milliseconds=1) == expiry_ms


def test_nonce_source_stays_in_range_without_repeats() -> None:
    source = NonceSource()
    drawn = [source.next() for _ in range(10_000)]
    assert all(NONCE_MIN <= n <= NONCE_MAX for n in drawn)
    assert len(set(drawn)) == len(drawn)
    with pytest.raises(ValueError):
        NonceSource(start=0)


def test_secrets_never_appear_in_reprs() -> None:
    signer = OrderSigner(CREDENTIALS, SN_MAIN)
    for text in (repr(CREDENTIALS), str(CREDENTIALS), repr(signer)):
        assert "test-api-key-123" not in text
        assert PRIVATE_KEY[2:12] not in text
    with pytest.raises(ValueError) as caught:
        Credentials(api_key="k", vault=1, stark_private_key="not-hex-secret", stark_public_key=PUBLIC_KEY)
    assert "not-hex-secret" not in str(caught.value)


def test_credentials_from_a_secrets_object_with_wrapped_values() -> None:
    class Hidden:
        def __init__(self, value: str) -> None:
            self._value = value

        def reveal(self) -> str:
            return self._value

    class Secrets:
        api_key = Hidden("abc")
        vault_id = "10002"
        stark_private_key = Hidden(PRIVATE_KEY)
        stark_public_key = PUBLIC_KEY

    assert Credentials.from_secrets(Secrets()) == Credentials(
        api_key="abc", vault=10002, stark_private_key=PRIVATE_KEY, stark_public_key=PUBLIC_KEY
    )


def test_external_ids_are_unique_and_recognisable() -> None:
    ids = ExternalIdFactory("extmm", run_id="r1")
    first = ids.next("BTC-USD", Side.BUY)
    second = ids.next("BTC-USD", Side.SELL)
    assert first == "extmm-r1-BTC-USD-b-000001"
    assert second == "extmm-r1-BTC-USD-s-000002"
    assert is_ours(first, "extmm") and is_ours(second, "extmm")
    assert not is_ours("extmmx-r1-BTC-USD-b-000001", "extmm")
    assert not is_ours("mm-bid-000001", "extmm")
    assert not is_ours(None, "extmm")
    assert ExternalIdFactory("extmm").run_id != ExternalIdFactory("extmm").run_id
    with pytest.raises(ValueError):
        ExternalIdFactory("ext-mm")


def test_bench_sign_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    bench_sign.register(parser.add_subparsers())
    args = parser.parse_args(["sign", "--orders", "20"])
    assert args.handler(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["orders"] == 20
    assert result["orders_per_s"] > 0
