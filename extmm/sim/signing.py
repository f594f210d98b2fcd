"""Stark order signatures as the venue checks them (SPEC §8): hash, verify, key pairs.

The simulator recomputes each order's SNIP-12 message hash from the request JSON, the
market's `l2Config` and the Starknet domain, exactly as the SDK's
`x10/signing/order_object_settlement.py` does, and checks the signature with
`fast_stark_crypto.verify` against the account's registered public key.
"""

from __future__ import annotations

import decimal
import random
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs
import fast_stark_crypto

# The SDK adds this buffer to the order's expiry inside the signed message (SPEC §8.2.4).
SETTLEMENT_EXPIRATION_BUFFER_S = 14 * 24 * 3600

# Order of the STARK curve's generator: private keys live in [1, EC_ORDER).
STARK_EC_ORDER = 0x0800000000000010FFFFFFFFFFFFFFFFB781126DCAE7B2321E66A241ADC64D2F

# Same contexts as the SDK (x10/core/amount.py): buys round up, sells down, fees up. The
# human amounts are multiplied in a default context so the 28-digit rounding matches.
_DEFAULT_CONTEXT = decimal.Context()
_ROUND_UP = decimal.Context(rounding=decimal.ROUND_UP)
_ROUND_DOWN = decimal.Context(rounding=decimal.ROUND_DOWN)


class SignatureError(ValueError):
    """The order's settlement does not verify; `code` is the venue's error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen(kw_only=True)
class StarknetDomain:
    """SNIP-12 domain of the order signature (SPEC §1.2); `revision` is a string."""

    name: str = "Perpetuals"
    version: str = "v0"
    chain_id: str = "SN_SEPOLIA"
    revision: str = "1"


TESTNET_DOMAIN = StarknetDomain()
MAINNET_DOMAIN = StarknetDomain(chain_id="SN_MAIN")


@attrs.frozen(kw_only=True)
class L2Config:
    """The four numbers of a market's `l2Config` that enter the signature."""

    collateral_id: int
    collateral_resolution: int
    synthetic_id: int
    synthetic_resolution: int

    @classmethod
    def from_market(cls, market: Mapping[str, Any]) -> L2Config:
        l2 = market["l2Config"]
        return cls(
            collateral_id=int(str(l2["collateralId"]), 16),
            collateral_resolution=int(l2["collateralResolution"]),
            synthetic_id=int(str(l2["syntheticId"]), 16),
            synthetic_resolution=int(l2["syntheticResolution"]),
        )


@attrs.frozen(kw_only=True)
class KeyPair:
    """A Stark key pair; the private key never appears in a repr."""

    private_key: int = attrs.field(repr=False)
    public_key: int

    @property
    def public_hex(self) -> str:
        return hex(self.public_key)

    @property
    def private_hex(self) -> str:
        return hex(self.private_key)

    @classmethod
    def from_private(cls, private_key: int) -> KeyPair:
        if not 0 < private_key < STARK_EC_ORDER:
            raise ValueError("Stark private key out of range")
        return cls(private_key=private_key, public_key=fast_stark_crypto.get_public_key(private_key))

    def sign(self, msg_hash: int) -> tuple[int, int]:
        return fast_stark_crypto.sign(private_key=self.private_key, msg_hash=msg_hash)


def generate_key_pair(rng: random.Random) -> KeyPair:
    """A fresh key pair from `rng` (deterministic for a seeded generator)."""
    return KeyPair.from_private(rng.randrange(1, STARK_EC_ORDER))


@attrs.frozen(kw_only=True)
class StarkAmounts:
    """The signed integer amounts of an order (echoed by the SDK in `debuggingAmounts`)."""

    synthetic: int
    collateral: int
    fee: int


def stark_amounts(
    *, is_buy: bool, qty: Decimal, price: Decimal, fee_rate: Decimal, l2: L2Config
) -> StarkAmounts:
    """SPEC §8.2 steps 1–3, bit-for-bit as the SDK computes them."""
    collateral_human = _DEFAULT_CONTEXT.multiply(qty, price)
    fee_human = _DEFAULT_CONTEXT.multiply(fee_rate, collateral_human)
    ctx = _ROUND_UP if is_buy else _ROUND_DOWN
    synthetic = int(ctx.multiply(qty, l2.synthetic_resolution).to_integral(context=ctx))
    collateral = int(ctx.multiply(collateral_human, l2.collateral_resolution).to_integral(context=ctx))
    fee = int(_ROUND_UP.multiply(fee_human, l2.collateral_resolution).to_integral(context=_ROUND_UP))
    if is_buy:
        collateral = -collateral
    else:
        synthetic = -synthetic
    return StarkAmounts(synthetic=synthetic, collateral=collateral, fee=fee)


def settlement_expiration_s(expiry_ms: int) -> int:
    """ceil(expiry in seconds) + 14 days, as `x10.utils.date.calc_settlement_expiration`."""
    return -(-expiry_ms // 1000) + SETTLEMENT_EXPIRATION_BUFFER_S


def order_msg_hash(
    *,
    amounts: StarkAmounts,
    expiry_ms: int,
    nonce: int,
    vault: int,
    public_key: int,
    l2: L2Config,
    domain: StarknetDomain,
) -> int:
    return fast_stark_crypto.get_order_msg_hash(
        position_id=vault,
        base_asset_id=l2.synthetic_id,
        base_amount=amounts.synthetic,
        quote_asset_id=l2.collateral_id,
        quote_amount=amounts.collateral,
        fee_asset_id=l2.collateral_id,
        fee_amount=amounts.fee,
        expiration=settlement_expiration_s(expiry_ms),
        salt=nonce,
        user_public_key=public_key,
        domain_name=domain.name,
        domain_version=domain.version,
        domain_chain_id=domain.chain_id,
        domain_revision=domain.revision,
    )


def body_msg_hash(
    body: Mapping[str, Any], l2: L2Config, domain: StarknetDomain, *, public_key: int, vault: int
) -> int:
    """The message hash of a wire order body (`NewOrderModel.to_api_request_json` shape).

    Raises ValueError/KeyError/TypeError/ArithmeticError when a field is missing or
    malformed; callers turn that into a request error.
    """
    fee_rate = Decimal(str(body["fee"]))
    builder_fee = body.get("builderFee")
    if builder_fee is not None:
        fee_rate += Decimal(str(builder_fee))
    side = body["side"]
    if side not in ("BUY", "SELL"):
        raise ValueError(f"side must be BUY or SELL, got {side!r}")
    amounts = stark_amounts(
        is_buy=side == "BUY",
        qty=Decimal(str(body["qty"])),
        price=Decimal(str(body["price"])),
        fee_rate=fee_rate,
        l2=l2,
    )
    return order_msg_hash(
        amounts=amounts,
        expiry_ms=int(body["expiryEpochMillis"]),
        nonce=int(str(body["nonce"])),
        vault=vault,
        public_key=public_key,
        l2=l2,
        domain=domain,
    )


def _hex_int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.lower().startswith("0x"):
        raise SignatureError(1101, f"{what} must be a 0x-prefixed hex string")
    try:
        return int(value, 16)
    except ValueError:
        raise SignatureError(1101, f"{what} is not valid hex") from None


def verify_order_body(
    body: Mapping[str, Any],
    l2: L2Config,
    domain: StarknetDomain,
    *,
    public_key: int,
    vault: int,
) -> None:
    """Check `settlement` of an order body against the account's key and vault (SPEC §8.4).

    Raises SignatureError with code 1100 (starkKey is not the account's key), 1102
    (collateralPosition is not the account's vault) or 1101 (missing or bad signature).
    """
    settlement = body.get("settlement")
    if not isinstance(settlement, Mapping):
        raise SignatureError(1101, "settlement is missing")
    signature = settlement.get("signature")
    if not isinstance(signature, Mapping):
        raise SignatureError(1101, "settlement.signature is missing")
    stark_key = _hex_int(settlement.get("starkKey"), "settlement.starkKey")
    if stark_key != public_key:
        raise SignatureError(1100, "settlement.starkKey is not the account's Stark public key")
    try:
        position = int(str(settlement.get("collateralPosition")))
    except ValueError:
        raise SignatureError(1102, "settlement.collateralPosition is not an integer") from None
    if position != vault:
        raise SignatureError(1102, "settlement.collateralPosition is not the account's vault")
    r = _hex_int(signature.get("r"), "signature.r")
    s = _hex_int(signature.get("s"), "signature.s")
    # Out-of-range r or s make the Rust verifier panic (and print a backtrace): refuse first.
    if not (0 < r < 2**251 and 0 < s < STARK_EC_ORDER):
        raise SignatureError(1101, "signature r or s out of range")
    try:
        msg_hash = body_msg_hash(body, l2, domain, public_key=public_key, vault=vault)
    except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
        raise SignatureError(1101, f"cannot compute the order hash: {exc}") from None
    try:
        ok = fast_stark_crypto.verify(public_key=public_key, msg_hash=msg_hash, r=r, s=s)
    except BaseException as exc:  # pyo3 panics derive from BaseException; never let one escape
        if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
            raise
        ok = False
    if not ok:
        raise SignatureError(1101, "invalid Stark signature")


class OrderSigner:
    """Builds signed wire bodies with the SDK's own `create_order_object` (tests, benches).

    The SDK is imported on first construction only (it costs about a second), and its
    market model is built once per signer.
    """

    def __init__(
        self, *, key_pair: KeyPair, vault: int, market: Mapping[str, Any], domain: StarknetDomain
    ) -> None:
        from x10.core.client_config import StarknetDomain as SdkDomain
        from x10.core.stark_account import StarkPerpetualAccount
        from x10.models.market import MarketModel

        self._account = StarkPerpetualAccount(
            vault=vault, private_key=key_pair.private_hex, public_key=key_pair.public_hex, api_key="-"
        )
        self._market = MarketModel.model_validate(dict(market))
        self._domain = SdkDomain(
            name=domain.name, version=domain.version, chain_id=domain.chain_id, revision=domain.revision
        )

    def __repr__(self) -> str:
        return f"OrderSigner(market={self._market.name!r}, vault={self._account.vault})"

    def sign(
        self,
        *,
        external_id: str,
        side: str,
        qty: Decimal,
        price: Decimal,
        expiry_ms: int,
        nonce: int,
        fee: Decimal,
        post_only: bool = False,
        reduce_only: bool = False,
        order_type: str = "LIMIT",
        time_in_force: str = "GTT",
        stp: str = "ACCOUNT",
        cancel_id: str | None = None,
    ) -> dict[str, Any]:
        from datetime import UTC, datetime

        from x10.models.order import OrderSide, OrderType, SelfTradeProtectionLevel, TimeInForce
        from x10.signing.order_object import create_order_object

        # Whole seconds plus ms as microseconds: exact, so the SDK renders `expiry_ms` back.
        expire_time = datetime.fromtimestamp(expiry_ms // 1000, tz=UTC).replace(
            microsecond=(expiry_ms % 1000) * 1000
        )
        order = create_order_object(
            account=self._account,
            market=self._market,
            amount_of_synthetic=qty,
            price=price,
            side=OrderSide(side),
            starknet_domain=self._domain,
            order_type=OrderType(order_type),
            post_only=post_only,
            reduce_only=reduce_only,
            previous_order_external_id=cancel_id,
            expire_time=expire_time,
            order_external_id=external_id,
            time_in_force=TimeInForce(time_in_force),
            self_trade_protection_level=SelfTradeProtectionLevel(stp),
            nonce=nonce,
            taker_fee=fee,
        )
        body: dict[str, Any] = order.to_api_request_json(exclude_none=True)
        return body
