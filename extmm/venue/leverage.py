"""Account leverage per market (SPEC §4.7) and the margin a configuration needs.

The venue keeps one leverage per market and account: `GET /user/leverage` reads it,
`PATCH /user/leverage` sets it (refused with codes 1049–1053 when the position, orders
or margin do not allow it). The initial margin of a market is
max(|position + buys|, |position − sells|) / leverage (SPEC §4.2), and an order whose
cost exceeds the available balance is rejected with 1140. At start the bot reads every
enabled market's leverage and, where `markets[].leverage` is set and differs, sets it
(`align_leverage`); `check` reports the margin a configuration can need (`margin_need`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import attrs

from extmm.venue.errors import MalformedResponse, VenueError


class LeveragePort(Protocol):
    async def get_leverage(self, markets: Sequence[str]) -> dict[str, Decimal]: ...
    async def set_leverage(self, market: str, leverage: Decimal) -> None: ...


class LeverageError(Exception):
    """The leverage could not be read or set; the bot must not start on a guess."""


@attrs.frozen(kw_only=True)
class LeverageStatus:
    market: str
    leverage: Decimal  # in force now
    previous: Decimal | None = None  # before we set it (None: we did not touch it)
    configured: int | None = None

    @property
    def changed(self) -> bool:
        return self.previous is not None

    def describe(self) -> str:
        if self.changed:
            return f"{self.market}: leverage set to {self.leverage:g}× (was {self.previous:g}×, as configured)"
        if self.configured is None:
            return f"{self.market}: leverage {self.leverage:g}× (the account's; markets[].leverage not set)"
        return f"{self.market}: leverage {self.leverage:g}× (as configured)"


def parse_leverage(data: Any) -> dict[str, Decimal]:
    """`GET /user/leverage` data: `[{market, leverage}]` (SDK `AccountLeverageModel`)."""
    if not isinstance(data, list):
        raise MalformedResponse(f"leverage: expected a list, got {type(data).__name__}")
    out: dict[str, Decimal] = {}
    for row in data:
        try:
            value = Decimal(str(row["leverage"]))
            market = str(row["market"])
        except (KeyError, TypeError, InvalidOperation):
            raise MalformedResponse(f"leverage: malformed row {row!r:.120}") from None
        if not value.is_finite() or value <= 0:
            raise MalformedResponse(f"leverage: {market} has leverage {value}")
        out[market] = value
    return out


async def align_leverage(port: Any, wanted: Mapping[str, int | None]) -> list[LeverageStatus]:
    """Read each market's leverage; set it where `wanted` names a different one.

    Raises LeverageError (with the market and the venue's reason) when the leverage cannot
    be read or set: the margin the operator planned for would not be the one in force."""
    names = list(wanted)
    try:
        current = await port.get_leverage(names)
    except VenueError as exc:
        raise LeverageError(f"reading the account leverage failed: {exc}") from None
    out = []
    for name in names:
        have = current.get(name)
        want = wanted[name]
        if have is None:
            raise LeverageError(f"{name}: the venue reported no leverage for this market")
        if want is None or Decimal(want) == have:
            out.append(LeverageStatus(market=name, leverage=have, configured=want))
            continue
        try:
            await port.set_leverage(name, Decimal(want))
        except VenueError as exc:
            raise LeverageError(f"{name}: setting leverage {want}× (now {have:g}×) failed: {exc}") from None
        out.append(LeverageStatus(market=name, leverage=Decimal(want), previous=have, configured=want))
    return out


def margin_need(*, leverage: Decimal, max_net_position_usd: float, quote_notional_usd: float) -> Decimal:
    """Initial margin of one market at its worst allowed state: the full net position plus a
    resting quote on the side that adds to it, max(|pos + buys|, |pos − sells|) / leverage
    (SPEC §4.2)."""
    exposure = Decimal(str(max_net_position_usd)) + Decimal(str(quote_notional_usd))
    return (exposure / leverage).quantize(Decimal("0.01"))
