"""`python -m extmm cancel-all`: emergency cancel of our open orders (or, with --all, every one).

Lists the open orders, cancels the selected ones — by default only ours, i.e. those whose
externalId carries our `external_id_prefix` (one mass cancel by external ids, SPEC §4.10
`externalOrderIds`); with `--all` the whole account (or one market) — and polls until the
venue lists none of them, re-sending while some remain (it is idempotent), for at most
`--timeout` seconds. Needs only the API key.

Unknown is a state, not zero: "none remain" is printed only when the venue's own list of
open orders, read after cancelling, showed none of the selected orders. Exit codes:
0 = the venue confirmed none of the selected orders open; 1 = some remain (listed);
2 = usage, config, credential or market errors (nothing sent); 3 = the venue could not be
reached or read, so what remains is UNKNOWN.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from extmm.commands import load_config_or_report
from extmm.commands._venue_target import (
    ApiKeyOnly,
    UsageError,
    VenueTarget,
    add_venue_arguments,
    open_venue,
    resolve_target,
)
from extmm.ops.secrets import API_KEY_VAR, SecretsError, load_secrets
from extmm.venue.cancel import POLL_S, RESEND_S, CancelOutcome, VenueRefused, cancel_and_confirm
from extmm.venue.errors import VenueError
from extmm.venue.types import OrderInfo

if TYPE_CHECKING:
    from extmm.venue.network import NetworkVenue

EXIT_OK = 0
EXIT_ORDERS_REMAIN = 1
EXIT_USAGE = 2
EXIT_UNKNOWN = 3
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_PREFIX = "extmm"
# Without --network/--endpoint: EXTENDED_NETWORK (environment or .env), else mainnet. A
# cancel can only reduce risk, and a testnet key is refused by mainnet (401 -> exit 2 with
# a hint), so the default never reports a venue it did not reach.
NETWORK_VAR = "EXTENDED_NETWORK"
DEFAULT_NETWORK = "mainnet"


async def cancel_open_orders(
    venue: NetworkVenue,
    *,
    market: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    everything: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = POLL_S,
    resend_s: float = RESEND_S,
) -> CancelOutcome:
    """Cancel the selected open orders and wait until the venue lists none of them
    (`extmm.venue.cancel.cancel_and_confirm`, the loop the bot uses too). Raises
    VenueRefused when the venue refuses the key (401/403) or the request itself (4xx)."""
    try:
        return await cancel_and_confirm(
            venue,
            markets=None if market is None else (market,),
            prefix=prefix,
            everything=everything,
            timeout_s=timeout_s,
            poll_s=poll_s,
            resend_s=resend_s,
            refusal_is_final=True,
        )
    except VenueRefused as exc:
        if "API key" in str(exc):
            raise VenueRefused(f"{exc}; check {API_KEY_VAR}") from None
        raise


def _by_market(orders: Sequence[OrderInfo]) -> str:
    counts = Counter(o.market for o in orders)
    return ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))


def _describe(order: OrderInfo) -> str:
    return (
        f"  {order.market} {order.side.value} {order.qty} @ {order.price} "
        f"id {order.id} externalId {order.external_id or '-'} ({order.status})"
    )


def report(outcome: CancelOutcome, *, scope: str, timeout_s: float, prefix: str = DEFAULT_PREFIX) -> int:
    before, cancelled, remaining = outcome.before, outcome.cancelled, outcome.remaining
    if before is None:
        print("open before: UNKNOWN (the venue's open orders could not be read)")
    else:
        print(f"open before: {len(before)}" + (f" ({_by_market(before)})" if before else ""))
    print(f"cancel of {scope} sent {outcome.sends} time{'s' if outcome.sends != 1 else ''}")
    for problem in outcome.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if outcome.foreign:
        print(
            f"left alone: {len(outcome.foreign)} open order{'s' if len(outcome.foreign) != 1 else ''} "
            f"not ours (externalId without the prefix {prefix}-) ({_by_market(outcome.foreign)}); "
            "--all cancels them too"
        )
    if remaining is None:
        print("cancelled: UNKNOWN")
        print(
            f"remaining: UNKNOWN (could not reach or read the venue for {timeout_s:g}s; "
            "do not assume the orders are gone: retry, or check the venue's web interface)"
        )
        return EXIT_UNKNOWN
    print(f"cancelled: {len(cancelled)}" + (f" ({_by_market(cancelled)})" if cancelled else ""))
    if not remaining:
        print("remaining: none (confirmed by the venue)")
        return EXIT_OK
    print(f"remaining after {timeout_s:g}s: {len(remaining)} ({_by_market(remaining)})")
    for order in remaining:
        print(_describe(order))
    if before is not None and any(o.id not in {b.id for b in before} for o in remaining):
        print("new orders appeared meanwhile: is a bot still running on this account? stop it first")
    return EXIT_ORDERS_REMAIN


def default_network(env_file: str | None) -> str:
    """`EXTENDED_NETWORK` from the environment or the .env file, else mainnet."""
    value = os.environ.get(NETWORK_VAR)
    if value is None:
        from pathlib import Path

        from dotenv import dotenv_values

        path = Path(env_file) if env_file else Path(".env")
        if path.is_file():
            value = dotenv_values(path).get(NETWORK_VAR)
    return (value or DEFAULT_NETWORK).strip().lower()


def handle(args: argparse.Namespace) -> int:
    network = args.network
    if network is None and not args.endpoint:
        network = default_network(args.env_file)
        if network not in ("testnet", "mainnet"):
            print(f"cancel-all: {NETWORK_VAR} must be testnet or mainnet, got {network!r}", file=sys.stderr)
            return EXIT_USAGE
    try:
        target = resolve_target(network, args.endpoint)
    except UsageError as exc:
        print(f"cancel-all: {exc}", file=sys.stderr)
        return EXIT_USAGE
    assert target is not None  # a network or an endpoint is always named by now
    prefix = args.prefix
    if args.config is not None:
        cfg = load_config_or_report(args.config)
        if cfg is None:
            return EXIT_USAGE
        prefix = prefix or cfg.external_id_prefix
    prefix = prefix or DEFAULT_PREFIX
    if not (prefix.isascii() and prefix.isalnum()):
        print(f"cancel-all: --prefix must be ASCII letters and digits, got {prefix!r}", file=sys.stderr)
        return EXIT_USAGE
    try:
        secrets = load_secrets(args.env_file)
    except (SecretsError, OSError) as exc:
        print(f"secrets error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if secrets.api_key is None:
        print(f"cancel-all needs {API_KEY_VAR} (environment or .env); nothing was sent", file=sys.stderr)
        return EXIT_USAGE
    credentials = ApiKeyOnly(api_key=secrets.api_key.reveal(), vault=secrets.vault_id)

    from extmm.ops.logs import configure_logging

    configure_logging(level="ERROR", stdlib_level="CRITICAL")
    where = f"market {args.market}" if args.market else "every market"
    scope = f"all orders in {where}" if args.all else f"our orders ({prefix}-*) in {where}"
    print(f"cancel-all on {target.label}: {scope}")
    try:
        outcome = trio.run(_run, target, credentials, args.market, args.timeout, prefix, args.all)
    except KeyboardInterrupt:
        return 130
    if isinstance(outcome, VenueRefused):
        message = str(outcome)
        if "API key" in message and args.network is None and not args.endpoint:
            message += f" (this was {target.network}: a testnet key needs --network testnet)"
        print(f"cancel-all: {message}; nothing was cancelled", file=sys.stderr)
        return EXIT_USAGE
    return report(outcome, scope=scope, timeout_s=args.timeout, prefix=prefix)


async def _run(
    target: VenueTarget,
    credentials: ApiKeyOnly,
    market: str | None,
    timeout_s: float,
    prefix: str,
    everything: bool,
) -> CancelOutcome | VenueRefused:
    from extmm.venue.rest import RetryPolicy

    # Reads may retry a little: in an emergency a transient 5xx must not end the attempt.
    retry = RetryPolicy(attempts=3, base_s=0.25, cap_s=1.0)
    async with open_venue(target, credentials, retry=retry) as (venue, _):
        try:
            if market is not None:
                await _check_market(venue, market)
            return await cancel_open_orders(
                venue, market=market, prefix=prefix, everything=everything, timeout_s=timeout_s
            )
        except VenueRefused as exc:
            # Returned, not raised: it would leave trio.run wrapped in an exception group.
            return exc


async def _check_market(venue: NetworkVenue, market: str) -> None:
    """An unknown --market is an operator mistake: one line naming the markets that exist."""
    try:
        names = sorted(m.name for m in await venue.get_markets())
    except VenueError:
        return  # unreachable: the cancel attempt reports UNKNOWN (exit 3)
    if names and market not in names:
        raise VenueRefused(f"unknown market {market}; the venue has: {', '.join(names)}")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected 0 < seconds <= 3600, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cancel-all",
        help="emergency: cancel our open orders (--all: every order of the account) and confirm",
        description=(
            "Emergency: cancel our open orders (externalId with our prefix; --all: every order of the "
            "sub-account) in all markets or --market, then poll until the venue lists none (re-sending "
            "while some remain) and print what was cancelled and what is left. Needs only "
            f"EXTENDED_API_KEY. Without --network/--endpoint the venue is ${NETWORK_VAR} (environment "
            "or .env), else mainnet. The dead man's switch is left alone. Stop a running bot first, "
            "or it will quote again. Exit 0 when the venue confirmed none left, 1 when some remain, "
            "2 on usage, credential or market errors (nothing sent), 3 when the venue could not be "
            "reached or read (remaining: UNKNOWN)."
        ),
    )
    parser.add_argument("--market", default=None, help="only this market, e.g. BTC-USD (default: all)")
    parser.add_argument(
        "--all",
        action="store_true",
        help="cancel every open order of the sub-account, not only ours (manual and other bots' too)",
    )
    parser.add_argument(
        "--prefix",
        default=None,
        help=f"our externalId prefix (default: the --config's external_id_prefix, else {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--config", default=None, metavar="FILE", help="validate this configuration file and use its prefix"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long to wait for the venue to confirm (default {DEFAULT_TIMEOUT_S:g})",
    )
    add_venue_arguments(parser, networks=("testnet", "mainnet"))
    parser.set_defaults(handler=handle)
