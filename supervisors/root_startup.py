"""The root's startup sequence (`RootStartup`, a part of `supervisors.root.RootSupervisor`).

Markets and fees from the venue; the account's open orders listed ONCE and used twice —
orders not ours refuse the start (unless allowed: the dead man's switch is account-wide),
and our leftovers are cancelled and confirmed gone; leverage aligned; the markets whose
book is valid within the deadline. Nothing is sent to the venue before a refusal.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from loguru import logger

from extmm.venue.errors import AuthError, VenueError
from extmm.venue.leverage import LeverageError, align_leverage
from extmm.venue.port import ExchangePort
from extmm.venue.signing import is_ours
from extmm.venue.types import OrderInfo
from supervisors.readiness import wait_for_books
from supervisors.root_fields import RootFields

if TYPE_CHECKING:
    from collections.abc import Sequence
    from decimal import Decimal


class StartupError(Exception):
    """The bot cannot start safely (unknown market, venue unreachable...)."""


class RootStartup(RootFields):
    book_probe_port: ExchangePort
    allow_foreign_orders: bool
    leverage: dict[str, Decimal]
    left_out: dict[str, str]

    async def _startup(self) -> dict[str, tuple[float, float]]:
        """Everything before the switch is armed; returns the fees of the markets to run."""
        try:
            fees = await self._prepare()
            listed = await self.port.get_open_orders()
        except AuthError as exc:
            raise StartupError(f"the venue refused the API key ({exc}); nothing was sent") from None
        except VenueError as exc:
            raise StartupError(f"cannot reach or read the venue ({exc}); nothing was sent") from None
        self._refuse_foreign(listed)
        result = await self._cancel_ours(self.markets, timeout_s=10.0, listed=listed)
        if not result.confirmed_none:
            raise StartupError(
                "open orders of ours could not be cancelled at startup ("
                + ("the venue did not confirm" if result.left is None else f"{result.left} left")
                + ")"
            )
        await self._align_leverage()  # after our leftovers are gone: their margin may block a change
        await self._markets_with_books(list(self.markets))
        return {n: fees[n] for n in self.markets}

    def _refuse_foreign(self, listed: Sequence[OrderInfo]) -> None:
        """Open orders on the sub-account that are not ours (any market) refuse the start."""
        prefix = self.cfg.external_id_prefix
        foreign = [o for o in listed if not is_ours(o.external_id, prefix)]
        if foreign and not self.allow_foreign_orders:
            counts = Counter(o.market for o in foreign)
            raise StartupError(
                f"{len(foreign)} open orders on this sub-account are not ours (externalId without "
                f"{prefix}-: "
                + ", ".join(f"{m}: {n}" for m, n in sorted(counts.items()))
                + "); the dead man's switch is account-wide and would cancel them. Run one bot per "
                "sub-account, or pass --allow-foreign-orders to accept that; nothing was sent"
            )
        if foreign:
            logger.warning("{} open orders on this sub-account are not ours; leaving them alone "
                           "(the dead man's switch would still cancel them)", len(foreign))

    async def _prepare(self) -> dict[str, tuple[float, float]]:
        names = [m.name for m in self.cfg.enabled_markets]
        infos = {m.name: m for m in await self.port.get_markets(names)}
        problems = []
        for name in names:
            info = infos.get(name)
            if info is None:
                problems.append(f"unknown market {name}: the venue does not have it")
            elif not info.active or info.status not in ("ACTIVE", ""):
                problems.append(f"market {name} is not active (status {info.status})")
        if problems:
            existing = sorted(m.name for m in await self.port.get_markets())
            raise StartupError("; ".join(problems) + f" (the venue has: {', '.join(existing)})")
        self.markets = {n: infos[n] for n in names}
        fees: dict[str, tuple[float, float]] = {}
        need_account_fees = []
        for market in self.cfg.enabled_markets:
            override = self.cfg.fees_for(market)
            if (
                override is not None
                and override.makerFeeRate is not None
                and override.takerFeeRate is not None
            ):
                fees[market.name] = (float(override.makerFeeRate), float(override.takerFeeRate))
            else:
                need_account_fees.append(market.name)
        if need_account_fees:
            account = {f.market: f for f in await self.port.get_fees(need_account_fees)}
            for market in self.cfg.enabled_markets:
                if market.name not in need_account_fees:
                    continue
                rates = account.get(market.name)
                override = self.cfg.fees_for(market)
                maker = float(rates.maker) if rates else 0.0
                taker = float(rates.taker) if rates else 0.00025
                if override is not None and override.makerFeeRate is not None:
                    maker = float(override.makerFeeRate)
                if override is not None and override.takerFeeRate is not None:
                    taker = float(override.takerFeeRate)
                fees[market.name] = (maker, taker)
        return fees

    async def _align_leverage(self) -> None:
        """Each market's account leverage read, and set where the config names another (SPEC §4.7)."""
        try:
            statuses = await align_leverage(self.port, {m.name: m.leverage for m in self.cfg.enabled_markets})
        except LeverageError as exc:
            raise StartupError(str(exc)) from None
        for status in statuses:
            logger.info(status.describe())
        self.leverage = {s.market: s.leverage for s in statuses}

    async def _markets_with_books(self, names: list[str]) -> list[str]:
        """The markets whose book is valid within the deadline; the others left out or fatal."""
        timeout = self.cfg.book_ready_timeout_s
        missing = await wait_for_books(
            self.book_probe_port, {n: self.markets[n].spec for n in names}, timeout_s=timeout
        )
        if not missing:
            return names
        text = "; ".join(f"{n} ({why})" for n, why in missing.items())
        if self.cfg.on_missing_book == "fail" or len(missing) == len(names):
            raise StartupError(f"no valid order book within {timeout:g}s for {text}")
        logger.error("left out, no valid order book within {:g}s: {}", timeout, text)
        self.left_out.update(missing)
        for name in missing:
            del self.markets[name]
        return [n for n in names if n not in missing]
