"""Stark order signing: `OrderRequest` → the complete JSON body of `POST /user/order`.

The SDK (`x10.signing.order_object.create_order_object`) does the hashing and signing; we
hand it everything it would otherwise invent: our nonce in [1, 2^31−1] (SPEC §8.3), the
expiry from our clock, the fee rate. Also here: account credentials that never print
their secrets, and external ids that let a restarted bot recognise its own orders.
"""

from __future__ import annotations

import json
import re
import secrets as _secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from x10.core.client_config import StarknetDomain
from x10.core.stark_account import StarkPerpetualAccount
from x10.models.market import MarketModel
from x10.models.order import OrderSide, OrderType, SelfTradeProtectionLevel, TimeInForce
from x10.signing.order_object import create_order_object

from extmm.venue.endpoints import SigningDomain
from extmm.venue.types import MarketInfo, OrderRequest, signed_fee_rate

NONCE_MIN = 1
NONCE_MAX = 2**31 - 1  # DOC26 allows up to 2^31; the TS examples stop one short — so do we

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")


def _revealed(value: Any) -> Any:
    """Unwrap a SecretStr-like value (`.reveal()` / `.get_secret_value()`), else as is."""
    for method in ("reveal", "get_secret_value"):
        fn = getattr(value, method, None)
        if callable(fn):
            return fn()
    return value


@attrs.frozen(kw_only=True)
class Credentials:
    """One sub-account's trading credentials. repr/str never show the API or private key."""

    api_key: str = attrs.field(repr=False)
    vault: int
    stark_private_key: str = attrs.field(repr=False)
    stark_public_key: str

    def __attrs_post_init__(self) -> None:
        # Name the field, never the value: a malformed private key must not reach a log.
        for name in ("stark_private_key", "stark_public_key"):
            if not _HEX.match(getattr(self, name)):
                raise ValueError(f"{name} must be a 0x-prefixed hex string")
        if self.vault <= 0:
            raise ValueError("vault must be a positive integer (the account's l2Vault)")
        if not self.api_key:
            raise ValueError("api_key is empty")

    @classmethod
    def from_secrets(cls, secrets: Any) -> Credentials:
        """From any object carrying api_key, vault (or vault_id) and the Stark key pair.

        Field values may be plain strings or SecretStr-like wrappers (`.reveal()`).
        """

        def pick(*names: str) -> Any:
            for name in names:
                value = getattr(secrets, name, None)
                if value is not None:
                    return _revealed(value)
            raise ValueError(f"credentials lack {names[0]}")

        return cls(
            api_key=str(pick("api_key")),
            vault=int(pick("vault", "vault_id")),
            stark_private_key=str(pick("stark_private_key", "private_key")),
            stark_public_key=str(pick("stark_public_key", "public_key")),
        )


class NonceSource:
    """Nonces in [1, 2^31−1]: a random start, then a counter, so none repeats for 2^31 orders.

    Whether the venue enforces nonce uniqueness is unknown (SPEC §11.4); a counter makes
    a collision within one run impossible, the random start makes one across restarts
    unlikely. Pass `start` for reproducible tests.
    """

    _SPAN = NONCE_MAX - NONCE_MIN + 1

    def __init__(self, start: int | None = None) -> None:
        if start is None:
            start = _secrets.randbelow(self._SPAN) + NONCE_MIN
        if not NONCE_MIN <= start <= NONCE_MAX:
            raise ValueError(f"nonce start must be in [{NONCE_MIN}, {NONCE_MAX}]")
        self._next = start

    def next(self) -> int:
        nonce = self._next
        self._next = NONCE_MIN + (nonce - NONCE_MIN + 1) % self._SPAN
        return nonce


def _to_sdk_domain(domain: SigningDomain) -> StarknetDomain:
    return StarknetDomain(
        name=domain.name, version=domain.version, chain_id=domain.chain_id, revision=str(domain.revision)
    )


# Fields the SDK's MarketModel requires but that never enter a signature; older market
# objects (e.g. the SDK's own test fixture, SPEC §3.1) lack them.
_SDK_MARKET_DEFAULTS: dict[str, Any] = {
    "type": "PERPETUAL",
    "isRfq": False,
    "isOffHours": False,
    "tradingHours": "CONTINUOUS",
}
_SDK_STATS_KEYS = (
    "dailyVolume dailyVolumeBase dailyPriceChange dailyLow dailyHigh lastPrice askPrice bidPrice "
    "markPrice indexPrice fundingRate openInterest openInterestBase"
).split()


def sdk_market_model(market: Mapping[str, Any]) -> MarketModel:
    """The SDK `MarketModel` of a venue market object, filling fields signing does not use."""
    raw = dict(market)
    for key, default in _SDK_MARKET_DEFAULTS.items():
        raw.setdefault(key, default)
    stats = dict(raw.get("marketStats") or {})
    for key in _SDK_STATS_KEYS:
        stats.setdefault(key, "0")
    stats.setdefault("nextFundingRate", 0)
    raw["marketStats"] = stats
    trading = dict(raw.get("tradingConfig") or {})
    trading.setdefault("riskFactorConfig", [])
    raw["tradingConfig"] = trading
    if "l2Config" not in raw:
        raise ValueError(f"market {raw.get('name')!r} has no l2Config; it cannot be signed for")
    return MarketModel.model_validate(raw)


def expiry_datetime(expiry_ms: int) -> datetime:
    """Exact UTC datetime of an epoch-ms expiry (no float round trip)."""
    return _EPOCH + timedelta(milliseconds=expiry_ms)


class OrderSigner:
    """Signs orders for one sub-account under one Starknet domain.

    Market objects are registered once (`add_market`) and their SDK model cached.
    `sign(order)` returns the body dict; `sign_json(order)` the compact JSON bytes sent
    on the wire.
    """

    def __init__(
        self, credentials: Credentials, domain: SigningDomain, *, nonces: NonceSource | None = None
    ) -> None:
        self._account = StarkPerpetualAccount(
            vault=credentials.vault,
            private_key=credentials.stark_private_key,
            public_key=credentials.stark_public_key,
            api_key=credentials.api_key,
        )
        self._domain = _to_sdk_domain(domain)
        self._nonces = nonces or NonceSource()
        self._markets: dict[str, MarketModel] = {}

    def __repr__(self) -> str:
        return f"OrderSigner(vault={self._account.vault}, chain={self._domain.chain_id})"

    @property
    def domain(self) -> SigningDomain:
        return SigningDomain.of(self._domain)

    def add_market(self, market: MarketInfo | Mapping[str, Any]) -> None:
        raw = market.raw if isinstance(market, MarketInfo) else market
        model = sdk_market_model(raw)
        self._markets[model.name] = model

    def has_market(self, name: str) -> bool:
        return name in self._markets

    def sign(self, order: OrderRequest, *, nonce: int | None = None) -> dict[str, Any]:
        """The complete signed body. `nonce` overrides the source (test vectors only)."""
        model = self._markets.get(order.market)
        if model is None:
            raise KeyError(f"market {order.market!r} is not registered with the signer")
        if nonce is None:
            nonce = self._nonces.next()
        elif not NONCE_MIN <= nonce <= NONCE_MAX:
            raise ValueError(f"nonce {nonce} outside [{NONCE_MIN}, {NONCE_MAX}]")
        try:
            new_order = create_order_object(
                account=self._account,
                market=model,
                amount_of_synthetic=order.qty,
                price=order.price,
                side=OrderSide(order.side.value),
                starknet_domain=self._domain,
                order_type=OrderType(order.order_type),
                post_only=order.post_only,
                reduce_only=order.reduce_only,
                previous_order_external_id=order.cancel_id,
                expire_time=expiry_datetime(order.expiry_ms),
                order_external_id=order.external_id,
                time_in_force=TimeInForce(order.time_in_force),
                self_trade_protection_level=SelfTradeProtectionLevel(order.stp),
                nonce=nonce,
                taker_fee=signed_fee_rate(order.max_fee_rate),  # a rebate is signed as 0
            )
        except ValueError as exc:  # unknown enum value or an SDK ValidationError
            raise ValueError(f"cannot sign order {order.external_id}: {exc}") from None
        body: dict[str, Any] = new_order.to_api_request_json(exclude_none=True)
        # The SDK recomputes ms from a float timestamp; the wire must carry our exact value.
        body["expiryEpochMillis"] = order.expiry_ms
        return body

    def sign_json(self, order: OrderRequest, *, nonce: int | None = None) -> bytes:
        return dumps(self.sign(order, nonce=nonce))


def dumps(body: Any) -> bytes:
    """Compact JSON bytes for a request body."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# -- external ids -----------------------------------------------------------------------------


class ExternalIdFactory:
    """`<prefix>-<run>-<market>-<side>-<counter>`, e.g. `extmm-k3f9a2-BTC-USD-b-000017`.

    The prefix marks our orders across restarts (`is_ours`); the run id keeps ids of two
    runs apart, so a restarted bot never reuses an externalId of its predecessor.
    """

    def __init__(self, prefix: str = "extmm", *, run_id: str | None = None, start: int = 1) -> None:
        if not prefix or "-" in prefix:
            raise ValueError("the external id prefix must be non-empty and contain no '-'")
        self.prefix = prefix
        self.run_id = run_id or _secrets.token_hex(3)
        self._counter = start

    def next(self, market: str, side: Any) -> str:
        side_value = getattr(side, "value", side)
        side_char = "b" if str(side_value).upper() == "BUY" else "s"
        external_id = f"{self.prefix}-{self.run_id}-{market}-{side_char}-{self._counter:06d}"
        self._counter += 1
        return external_id


def is_ours(external_id: str | None, prefix: str = "extmm") -> bool:
    """Whether an order's externalId was made by an `ExternalIdFactory` with this prefix."""
    return external_id is not None and external_id.startswith(f"{prefix}-")
