"""The online checks of `python -m extmm check --network/--endpoint`: read-only, no order.

Credentials (present, well-formed, the key pair matches), connectivity, the account and its
identity, every enabled market, streams, fee rates, the configured sizes against the market
minimums, leverage and margin. Each check gives one `CheckResult` (an `OK`/`FAIL`/`SKIP` line).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import attrs
import trio

from extmm.commands._venue_target import ApiKeyOnly, VenueTarget, open_venue
from extmm.config import BotConfig, MarketConfig
from extmm.ops.secrets import (
    API_KEY_VAR,
    PRIVATE_KEY_VAR,
    PUBLIC_KEY_VAR,
    VAULT_ID_VAR,
    Secrets,
    SecretsError,
)
from extmm.venue.errors import AuthError, StreamError, VenueError
from extmm.venue.types import MarketInfo

if TYPE_CHECKING:  # the adapter pulls in the SDK: imported when a command talks to a venue
    from extmm.commands._venue_target import VenueCredentials
    from extmm.venue.network import NetworkVenue
    from extmm.venue.signing import Credentials

STEP_TIMEOUT_S = 15.0  # per online check: a hung venue fails the check, not the operator's patience


@attrs.frozen(kw_only=True)
class CheckResult:
    name: str
    passed: bool | None  # None: skipped because an earlier check failed
    detail: str

    @classmethod
    def ok(cls, name: str, detail: str) -> CheckResult:
        return cls(name=name, passed=True, detail=detail)

    @classmethod
    def fail(cls, name: str, detail: str) -> CheckResult:
        return cls(name=name, passed=False, detail=detail)

    @classmethod
    def skip(cls, name: str, detail: str) -> CheckResult:
        return cls(name=name, passed=None, detail=detail)

    def line(self) -> str:
        word = {True: "OK", False: "FAIL", None: "SKIP"}[self.passed]
        return f"{word} {self.name}: {self.detail}"


@attrs.frozen(kw_only=True)
class CredentialsCheck:
    """What the environment supplied: the verdict line and whatever credentials are usable."""

    result: CheckResult
    venue_credentials: VenueCredentials | None  # enough for private reads
    trading: Credentials | None  # enough to sign


def check_credentials(secrets: Secrets | SecretsError) -> CredentialsCheck:
    """Present and well-formed, and the private key belongs to the public key; never shows a value."""
    if isinstance(secrets, SecretsError):
        return CredentialsCheck(
            result=CheckResult.fail("credentials", "; ".join(secrets.problems)),
            venue_credentials=None,
            trading=None,
        )
    api_key = secrets.api_key.reveal() if secrets.api_key is not None else None
    partial_creds = ApiKeyOnly(api_key=api_key, vault=secrets.vault_id) if api_key else None
    missing = secrets.missing()
    if missing:
        detail = f"missing {', '.join(missing)} (set them in the environment or a .env file)"
        return CredentialsCheck(
            result=CheckResult.fail("credentials", detail), venue_credentials=partial_creds, trading=None
        )
    assert secrets.stark_private_key is not None and secrets.stark_public_key is not None
    assert secrets.vault_id is not None and api_key is not None
    from extmm.venue.signing import Credentials

    private_key = secrets.stark_private_key.reveal()
    try:
        trading = Credentials(
            api_key=api_key,
            vault=secrets.vault_id,
            stark_private_key=_hex(private_key),
            stark_public_key=_hex(secrets.stark_public_key),
        )
    except ValueError as exc:  # names the field, never the value
        return CredentialsCheck(
            result=CheckResult.fail("credentials", _variable_names(str(exc))),
            venue_credentials=partial_creds,
            trading=None,
        )
    if not _key_pair_matches(trading.stark_private_key, trading.stark_public_key):
        detail = f"{PRIVATE_KEY_VAR} is not the private key of {PUBLIC_KEY_VAR}"
        return CredentialsCheck(
            result=CheckResult.fail("credentials", detail), venue_credentials=partial_creds, trading=None
        )
    return CredentialsCheck(
        result=CheckResult.ok(
            "credentials", f"all four present; the Stark key pair matches (vault {trading.vault})"
        ),
        venue_credentials=trading,
        trading=trading,
    )


def _hex(value: str) -> str:
    return value if value[:2].lower() == "0x" else f"0x{value}"


_FIELD_VARS = {
    "stark_private_key": PRIVATE_KEY_VAR,
    "stark_public_key": PUBLIC_KEY_VAR,
    "api_key": API_KEY_VAR,
    "vault": VAULT_ID_VAR,
}


def _variable_names(text: str) -> str:
    """A `Credentials` complaint in the operator's terms: variable names instead of fields."""
    return re.sub(r"\b(" + "|".join(_FIELD_VARS) + r")\b", lambda m: _FIELD_VARS[m.group(1)], text)


def _key_pair_matches(private_hex: str, public_hex: str) -> bool:
    import fast_stark_crypto

    try:
        derived = fast_stark_crypto.get_public_key(int(private_hex, 16))
    except Exception:  # out of the curve's range: the library refuses, the pair cannot match
        return False
    return int(derived) == int(public_hex, 16)


def market_price(info: MarketInfo) -> Decimal | None:
    """The live mark (else last trade) price from the market object's `marketStats`."""
    stats = info.raw.get("marketStats") or {}
    for key in ("markPrice", "lastPrice"):
        try:
            price = Decimal(str(stats.get(key)))
        except (InvalidOperation, ValueError):
            continue
        if price.is_finite() and price > 0:
            return price
    return None


def check_sizes(market: MarketConfig, index: int, info: MarketInfo) -> CheckResult:
    """A quote of `quote_notional_cap_usd` at the live price must reach the minimum order size,
    and a configured `min_order_size` must not undercut the venue's."""
    name = f"sizes {market.name}"
    spec = info.spec
    price = market_price(info)
    if price is None:
        return CheckResult.fail(name, "the venue reports no mark or last price; quotes cannot be sized")
    venue_min = spec.min_order_size
    configured_min = Decimal(str(market.min_order_size))
    problems = []
    if 0 < configured_min < venue_min:
        problems.append(
            f"markets[{index}].min_order_size {configured_min} is below the venue minimum {venue_min}"
        )
    cap_text = f"${market.quote_notional_cap_usd:g}"
    # Sizes round down to the lot, as the quoter does.
    lots = math.floor(Decimal(str(market.quote_notional_cap_usd)) / price / spec.lot_size)
    quote_qty = spec.lots_to_qty(lots)
    needed = max(venue_min, configured_min)
    if quote_qty < needed:
        least = (needed * price).quantize(Decimal("0.01"), rounding=ROUND_CEILING)
        problems.append(
            f"markets[{index}].quote_notional_cap_usd {cap_text} buys only {quote_qty} at {price}, "
            f"below the minimum order size {needed} (needs at least ${least})"
        )
    if problems:
        return CheckResult.fail(name, "; ".join(problems))
    return CheckResult.ok(
        name, f"a {cap_text} quote is {quote_qty} at {price} (venue minimum {venue_min}, lot {spec.lot_size})"
    )


async def run_network_checks(
    cfg: BotConfig,
    target: VenueTarget,
    secrets: Secrets | SecretsError,
    *,
    step_timeout_s: float = STEP_TIMEOUT_S,
) -> list[CheckResult]:
    """Every online check against `target`, in order; read-only (no order, no DMS)."""
    results: list[CheckResult] = []
    if target.endpoint is None:
        creds = None
        results.append(CheckResult.ok("credentials", "paper: the embedded simulator's own account"))
    else:
        verdict = check_credentials(secrets)
        results.append(verdict.result)
        creds = verdict.venue_credentials

    async with open_venue(target, creds) as (venue, creds):
        # Connectivity: everything else needs the market list.
        started = trio.current_time()
        try:
            with trio.fail_after(step_timeout_s):
                markets = {m.name: m for m in await venue.get_markets()}
        except (VenueError, trio.TooSlowError) as exc:
            results.append(
                CheckResult.fail("connectivity", f"GET {venue.rest_url}/info/markets: {_reason(exc)}")
            )
            results.append(CheckResult.skip("markets", "the venue could not be reached"))
            return results
        elapsed_ms = (trio.current_time() - started) * 1000
        results.append(
            CheckResult.ok(
                "connectivity",
                f"{venue.rest_url} answers, {len(markets)} markets listed ({elapsed_ms:.0f} ms)",
            )
        )

        account_ok = False
        if creds is None:
            results.append(CheckResult.skip("account", f"needs {API_KEY_VAR}"))
        else:
            account = await _check_account(venue, cfg, creds, step_timeout_s)
            results.extend(account)
            account_ok = all(r.passed for r in account)

        listed: list[tuple[int, MarketConfig, MarketInfo]] = []
        for index, market in enumerate(cfg.markets):
            if not market.enabled:
                continue
            info = markets.get(market.name)
            if info is None:
                results.append(
                    CheckResult.fail(
                        f"market {market.name}",
                        f"markets[{index}].name: {market.name} is not listed on {target.network} "
                        f"(listed: {_some(sorted(markets))})",
                    )
                )
            elif not info.active or info.status != "ACTIVE":
                results.append(
                    CheckResult.fail(
                        f"market {market.name}",
                        f"status {info.status}, active={info.active}: not open for quoting",
                    )
                )
            else:
                results.append(
                    CheckResult.ok(
                        f"market {market.name}",
                        f"ACTIVE, tick {info.spec.tick_size}, lot {info.spec.lot_size}, "
                        f"min size {info.spec.min_order_size}",
                    )
                )
                listed.append((index, market, info))

        results.append(
            await _check_streams(venue, [m for _, m, _ in listed], creds, account_ok, step_timeout_s)
        )

        if not listed:
            results.append(CheckResult.skip("fees", "no enabled market is listed"))
        elif not account_ok:
            results.append(CheckResult.skip("fees", "the account check did not pass"))
        else:
            results.append(await _check_fees(venue, [m.name for _, m, _ in listed], step_timeout_s))

        for index, market, info in listed:
            results.append(check_sizes(market, index, info))
        if listed and account_ok:
            results.extend(await _check_leverage(venue, cfg, [m for _, m, _ in listed], step_timeout_s))
    return results


async def _check_leverage(
    venue: NetworkVenue, cfg: BotConfig, markets: Sequence[MarketConfig], step_timeout_s: float
) -> list[CheckResult]:
    """Each market's leverage (the configured one if set, as the bot would set it at start)
    and whether equity covers the margin of a full net position plus a resting quote per
    market (SPEC §4.2, §4.7; orders beyond it are rejected with 1140)."""
    from extmm.venue.leverage import margin_need

    try:
        with trio.fail_after(step_timeout_s):
            current = await venue.get_leverage([m.name for m in markets])
            balance = await venue.get_balance()
    except (VenueError, trio.TooSlowError) as exc:
        return [CheckResult.fail("leverage", f"GET /user/leverage: {_reason(exc)}")]
    results = []
    total = Decimal(0)
    for market in markets:
        have = current.get(market.name)
        if have is None:
            results.append(CheckResult.fail(f"leverage {market.name}", "the venue reports no leverage"))
            continue
        lev = Decimal(market.leverage) if market.leverage is not None else have
        need = margin_need(
            leverage=lev,
            max_net_position_usd=cfg.risk.max_net_position_usd,
            quote_notional_usd=market.quote_notional_cap_usd,
        )
        total += need
        if market.leverage is None:
            how = f"{have:g}× (the account's)"
        elif lev == have:
            how = f"{have:g}× (as configured)"
        else:
            how = f"{have:g}× now, {lev:g}× configured (set at start)"
        results.append(
            CheckResult.ok(
                f"leverage {market.name}",
                f"{how}; margin for ${cfg.risk.max_net_position_usd:g} position + "
                f"${market.quote_notional_cap_usd:g} quote: ${need}",
            )
        )
    equity = balance.equity if balance is not None else Decimal(0)
    detail = f"equity ${equity} vs ${total} initial margin at the limits of all {len(markets)} markets"
    if equity < total:
        results.append(
            CheckResult.fail("margin", f"{detail}: orders would be rejected (1140); raise leverage or lower "
                             "risk.max_net_position_usd / quote_notional_cap_usd")
        )
    else:
        results.append(CheckResult.ok("margin", f"{detail}: covered"))
    return results


async def _check_account(
    venue: NetworkVenue, cfg: BotConfig, creds: VenueCredentials, step_timeout_s: float
) -> list[CheckResult]:
    try:
        with trio.fail_after(step_timeout_s):
            info = await venue.rest.get("/user/account/info", operation="get_account_info", private=True)
            balance = await venue.get_balance()
            positions = await venue.get_positions()
            open_orders = await venue.get_open_orders()
    except AuthError:
        return [
            CheckResult.fail(
                "account",
                f"the venue refused the API key (HTTP 401/403): check {API_KEY_VAR} for this network",
            )
        ]
    except (VenueError, trio.TooSlowError) as exc:
        return [CheckResult.fail("account", f"cannot read the account: {_reason(exc)}")]

    results = []
    if not isinstance(creds, ApiKeyOnly):  # full credentials: the key pair can be compared
        results.append(_identity(info, creds))
    amount = balance.balance if balance is not None else Decimal(0)
    equity = balance.equity if balance is not None else Decimal(0)
    held = ", ".join(f"{p.market} {p.side} {p.size}" for p in positions) or "none"
    detail = f"balance ${amount}, equity ${equity}; positions: {held}; {len(open_orders)} open order" + (
        "s" if len(open_orders) != 1 else ""
    )
    minimum = Decimal(str(cfg.risk.min_balance_usd))
    if equity < minimum:
        results.append(
            CheckResult.fail("account", f"{detail}; equity is below risk.min_balance_usd ${minimum}")
        )
    else:
        results.append(CheckResult.ok("account", detail))
    return results


def _identity(info: Any, creds: Credentials) -> CheckResult:
    """The venue's `l2Key`/`l2Vault` for this API key must be the configured key and vault."""
    try:
        l2_key = int(str(info["l2Key"]), 16)
        l2_vault = int(info["l2Vault"])
    except (KeyError, TypeError, ValueError):
        return CheckResult.fail("account identity", "GET /user/account/info: no l2Key/l2Vault in the answer")
    problems = []
    if l2_key != int(creds.stark_public_key, 16):
        problems.append(f"{PUBLIC_KEY_VAR} is not this account's l2Key")
    if l2_vault != creds.vault:
        problems.append(f"{VAULT_ID_VAR} {creds.vault} is not this account's l2Vault {l2_vault}")
    if problems:
        return CheckResult.fail("account identity", "; ".join(problems) + " (orders would be refused)")
    return CheckResult.ok(
        "account identity", f"the API key's account has this Stark key and vault {l2_vault}"
    )


async def _check_streams(
    venue: NetworkVenue,
    markets: Sequence[MarketConfig],
    creds: VenueCredentials | None,
    account_ok: bool,
    step_timeout_s: float,
) -> CheckResult:
    if not markets:
        return CheckResult.skip("streams", "no enabled market is listed")
    name = markets[0].name
    seen = []
    try:
        with trio.fail_after(step_timeout_s):
            message = await first_frame(venue.orderbook_stream(name, depth=1))
            seen.append(f"orderbooks/{name} sent a {message.type or 'frame'}")
            if creds is not None and account_ok:
                await first_frame(venue.account_stream())
                seen.append("account sent its snapshot")
    except (StreamError, AuthError) as exc:
        return CheckResult.fail("streams", f"{venue.stream_url}: {_reason(exc)}")
    except trio.TooSlowError:
        return CheckResult.fail("streams", f"{venue.stream_url}: no frame within {step_timeout_s:g}s")
    return CheckResult.ok("streams", "; ".join(seen))


async def first_frame(subscription: AbstractAsyncContextManager[Any]) -> Any:
    """Open a subscription, take its first frame, then drop the connection without a close
    handshake: a server ping arriving during the handshake crashes trio-websocket 0.12's
    reader (python-trio/trio-websocket#184) and leaks a stray `Cancelled` out of the
    context manager. Cancelling our own scope first makes that `Cancelled` ours."""
    with trio.CancelScope() as probe:
        async with subscription as stream:
            frame = await stream.receive()
            probe.cancel()
    return frame


async def _check_fees(venue: NetworkVenue, names: list[str], step_timeout_s: float) -> CheckResult:
    try:
        with trio.fail_after(step_timeout_s):
            fees = await venue.get_fees(names)
    except (VenueError, trio.TooSlowError) as exc:
        return CheckResult.fail("fees", f"GET /user/fees: {_reason(exc)}")
    got = {f.market: f for f in fees}
    missing = [n for n in names if n not in got]
    if missing:
        return CheckResult.fail("fees", f"no fee rates for {', '.join(missing)}")
    return CheckResult.ok("fees", "; ".join(f"{n} maker {got[n].maker} taker {got[n].taker}" for n in names))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def _some(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
