"""Setting up a simulator: the engine over the bundled markets, per-account fees, and an
account's paper credentials (`SimCredentials`). Used by the server (`extmm.sim.server`),
the in-process port (`extmm.sim.inproc`) and the backtest.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from extmm.markets import bundled_markets
from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.model import AccountInfo

if TYPE_CHECKING:
    from extmm.venue.signing import Credentials


@attrs.frozen(kw_only=True)
class SimCredentials:
    """Paper credentials of a simulator account; the keys stay out of reprs."""

    account_id: int
    api_key: str = attrs.field(repr=False)
    vault: int
    stark_private_key: str = attrs.field(repr=False)
    stark_public_key: str

    @classmethod
    def of(cls, info: AccountInfo) -> SimCredentials:
        if info.private_key is None:
            raise ValueError("the account has no private key on record")
        return cls(
            account_id=info.id,
            api_key=info.api_key,
            vault=info.vault,
            stark_private_key=hex(info.private_key),
            stark_public_key=hex(info.public_key),
        )

    def credentials(self) -> Credentials:
        """The same keys as the bot's venue adapter takes them."""
        from extmm.venue.signing import Credentials  # the SDK behind it loads slowly: only when asked

        return Credentials(
            api_key=self.api_key,
            vault=self.vault,
            stark_private_key=self.stark_private_key,
            stark_public_key=self.stark_public_key,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "api_key": self.api_key,
            "vault": self.vault,
            "stark_private_key": self.stark_private_key,
            "stark_public_key": self.stark_public_key,
        }


def set_account_fees(
    engine: SimEngine, account_id: int, maker: Decimal | None, taker: Decimal | None
) -> None:
    """Per-account fee rates on every market (`/user/fees` then reports them, SPEC §4.6)."""
    if maker is None and taker is None:
        return
    for name in engine.market_names():
        current = engine.fees(account_id, [name])[0]
        engine.set_fee_rates(
            account_id,
            name,
            maker=current.maker if maker is None else Decimal(maker),
            taker=current.taker if taker is None else Decimal(taker),
        )


def build_engine(
    *,
    markets: Sequence[str] | None = None,
    seed: int = 0,
    start_ms: int,
    verify_signatures: bool = True,
    strict_nonce: bool = False,
    engine_config: EngineConfig | None = None,
    flow: str = "default",
) -> SimEngine:
    """An engine over the bundled markets (all, or the named ones).

    Nonces are not held to DOC26's [1, 2^31] by default: the SDK's own `place_order` draws
    them from [0, 2^32−1] (SPEC §8.3) and evidently works against the venue.
    """
    bundled = bundled_markets()
    names = list(markets) if markets else list(bundled)
    unknown = [n for n in names if n not in bundled]
    if unknown:
        raise KeyError(f"unknown market(s) {', '.join(unknown)}; bundled: {', '.join(sorted(bundled))}")
    config = engine_config or EngineConfig(
        seed=seed, verify_signatures=verify_signatures, strict_nonce=strict_nonce, flow_preset=flow
    )
    return SimEngine(config, start_ms=start_ms, markets=[bundled[n] for n in names])
