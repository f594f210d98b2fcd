"""`python -m extmm cancel-all`: emergency mass cancel of the account's open orders.

Sends one mass cancel (the whole account, or one market), then polls the open orders until
the venue shows none, re-sending the cancel while some remain (it is idempotent), for at
most `--timeout` seconds. Needs only the API key. Exit 0 when none are left, 1 when some
remain (or the venue could not be asked), 2 on usage, config or credential errors.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from extmm.commands import load_config_or_report
from extmm.commands.check import (
    ApiKeyOnly,
    UsageError,
    VenueTarget,
    add_venue_arguments,
    open_venue,
    resolve_target,
)
from extmm.secrets import API_KEY_VAR, SecretsError, load_secrets
from extmm.venue.errors import AuthError, OrderRejected, VenueError
from extmm.venue.types import OrderInfo

if TYPE_CHECKING:
    from extmm.venue.network import NetworkVenue

EXIT_OK = 0
EXIT_ORDERS_REMAIN = 1
EXIT_USAGE = 2
DEFAULT_TIMEOUT_S = 10.0
POLL_S = 0.5
RESEND_S = 3.0  # a lost or half-applied mass cancel is simply sent again


class VenueRefused(Exception):
    """The venue refused the API key or the market; the operator must fix the input (exit 2)."""


@attrs.frozen(kw_only=True)
class CancelOutcome:
    before: tuple[OrderInfo, ...]  # open when we started
    remaining: tuple[OrderInfo, ...]  # still open at the end (a running bot may add new ones)
    sends: int  # mass cancels sent (accepted or not)
    problems: tuple[str, ...] = ()  # venue failures along the way

    @property
    def cancelled(self) -> tuple[OrderInfo, ...]:
        """Orders open at the start and gone at the end (a few may have filled meanwhile)."""
        left = {o.id for o in self.remaining}
        return tuple(o for o in self.before if o.id not in left)


async def cancel_open_orders(
    venue: NetworkVenue,
    *,
    market: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = POLL_S,
    resend_s: float = RESEND_S,
) -> CancelOutcome:
    """Mass-cancel (one market or all) and wait until the venue lists no open order.

    Raises VenueRefused when the venue refuses the key (401/403) or the request
    itself (4xx: e.g. an unknown market); other venue failures are collected in
    `problems` and the attempt goes on until `timeout_s`.
    """
    problems: list[str] = []
    before: tuple[OrderInfo, ...] = ()
    remaining: tuple[OrderInfo, ...] | None = None
    sends = 0
    with trio.move_on_after(timeout_s):
        try:
            before = tuple(await venue.get_open_orders(market))
        except AuthError as exc:
            raise VenueRefused(f"the venue refused the API key ({exc}); check {API_KEY_VAR}") from None
        except VenueError as exc:
            problems.append(f"listing open orders failed: {exc}")
        next_send = trio.current_time()
        while True:
            if trio.current_time() >= next_send:
                sends += 1
                next_send = trio.current_time() + resend_s
                try:
                    if market is None:
                        await venue.mass_cancel(cancel_all=True)
                    else:
                        await venue.mass_cancel(markets=[market])
                except AuthError as exc:
                    raise VenueRefused(
                        f"the venue refused the API key ({exc}); check {API_KEY_VAR}"
                    ) from None
                except OrderRejected as exc:
                    if exc.http_status is not None and 400 <= exc.http_status < 500:
                        raise VenueRefused(f"the venue refused the mass cancel: {exc}") from None
                    problems.append(f"mass cancel failed: {exc}")
                except VenueError as exc:
                    problems.append(f"mass cancel failed: {exc}")
            try:
                remaining = tuple(await venue.get_open_orders(market))
            except VenueError as exc:
                problems.append(f"listing open orders failed: {exc}")
                remaining = None
            if remaining == ():
                break
            await trio.sleep(poll_s)
    if remaining is None:
        # Never saw the venue's list after cancelling: count everything as still open.
        remaining = before
        problems.append("could not confirm with the venue that the orders are gone")
    return CancelOutcome(
        before=before, remaining=remaining, sends=sends, problems=tuple(dict.fromkeys(problems))
    )


def _by_market(orders: Sequence[OrderInfo]) -> str:
    counts = Counter(o.market for o in orders)
    return ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))


def _describe(order: OrderInfo) -> str:
    return (
        f"  {order.market} {order.side.value} {order.qty} @ {order.price} "
        f"id {order.id} externalId {order.external_id or '-'} ({order.status})"
    )


def report(outcome: CancelOutcome, *, scope: str, timeout_s: float) -> int:
    before, cancelled, remaining = outcome.before, outcome.cancelled, outcome.remaining
    print(f"open before: {len(before)}" + (f" ({_by_market(before)})" if before else ""))
    print(f"mass cancel of {scope} sent {outcome.sends} time{'s' if outcome.sends != 1 else ''}")
    for problem in outcome.problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"cancelled: {len(cancelled)}" + (f" ({_by_market(cancelled)})" if cancelled else ""))
    if not remaining:
        print("remaining: none")
        return EXIT_OK
    print(f"remaining after {timeout_s:g}s: {len(remaining)} ({_by_market(remaining)})")
    for order in remaining:
        print(_describe(order))
    if any(o.id not in {b.id for b in before} for o in remaining):
        print("new orders appeared meanwhile: is a bot still running on this account? stop it first")
    return EXIT_ORDERS_REMAIN


def handle(args: argparse.Namespace) -> int:
    try:
        target = resolve_target(args.network, args.endpoint)
    except UsageError as exc:
        print(f"cancel-all: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if target is None:
        print(
            "cancel-all: name the venue with --network testnet|mainnet or --endpoint REST_URL STREAM_URL",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.config is not None and load_config_or_report(args.config) is None:
        return EXIT_USAGE
    try:
        secrets = load_secrets(args.env_file)
    except SecretsError as exc:
        print(f"secrets error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if secrets.api_key is None:
        print(f"cancel-all needs {API_KEY_VAR} (environment or .env); nothing was sent", file=sys.stderr)
        return EXIT_USAGE
    credentials = ApiKeyOnly(api_key=secrets.api_key.reveal(), vault=secrets.vault_id)

    from extmm.ops.logs import configure_logging

    configure_logging(level="ERROR", stdlib_level="CRITICAL")
    scope = f"market {args.market}" if args.market else "every market"
    print(f"cancel-all on {target.label}: {scope}")
    try:
        outcome = trio.run(_run, target, credentials, args.market, args.timeout)
    except KeyboardInterrupt:
        return 130
    if isinstance(outcome, VenueRefused):
        print(f"cancel-all: {outcome}", file=sys.stderr)
        return EXIT_USAGE
    return report(outcome, scope=scope, timeout_s=args.timeout)


async def _run(
    target: VenueTarget, credentials: ApiKeyOnly, market: str | None, timeout_s: float
) -> CancelOutcome | VenueRefused:
    from extmm.venue.rest import RetryPolicy

    # Reads may retry a little: in an emergency a transient 5xx must not end the attempt.
    retry = RetryPolicy(attempts=3, base_s=0.25, cap_s=1.0)
    async with open_venue(target, credentials, retry=retry) as (venue, _):
        try:
            return await cancel_open_orders(venue, market=market, timeout_s=timeout_s)
        except VenueRefused as exc:
            # Returned, not raised: it would leave trio.run wrapped in an exception group.
            return exc


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cancel-all",
        help="emergency: cancel every open order of the account (or of one market)",
        description=(
            "Emergency: mass-cancel the account's open orders (all markets, or --market), then poll "
            "until the venue lists none (re-sending the cancel while some remain) and print what was "
            "cancelled and what is left. Needs only EXTENDED_API_KEY. The dead man's switch is left "
            "alone (neither armed nor disarmed). Stop a running bot first, or it will quote again. "
            "Exit 0 when no order is left, 1 when some remain, 2 on usage or credential errors."
        ),
    )
    parser.add_argument("--market", default=None, help="only this market, e.g. BTC-USD (default: all)")
    parser.add_argument(
        "--config", default=None, metavar="FILE", help="also validate this configuration file first"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long to wait for the venue to confirm (default {DEFAULT_TIMEOUT_S:g})",
    )
    add_venue_arguments(parser, networks=("testnet", "mainnet"))
    parser.set_defaults(handler=handle)
