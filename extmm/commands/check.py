"""`python -m extmm check`: validate a configuration before trading with it; sends no order.

Offline (no `--network`/`--endpoint`): exit 0 with a short summary, or exit 2 with one
`key.path: problem` line per problem on stderr. Online it also asks the venue, read-only:
credentials, connectivity, streams, the account, every enabled market, fee rates and the
configured sizes against the market minimums; one `OK …`/`FAIL …` line per check, exit 0
when all pass, else 2. The online checks are in `extmm.commands._online_checks`; the venue
options and `open_venue`, shared with `cancel-all`, in `extmm.commands._venue_target`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from extmm.commands._online_checks import check_credentials, run_network_checks
from extmm.commands._venue_target import (
    UsageError,
    VenueTarget,
    add_venue_arguments,
    open_venue,
    resolve_target,
)
from extmm.config import BotConfig, ConfigError, MarketConfig, load_config
from extmm.ops.secrets import Secrets, SecretsError, load_secrets

EXIT_OK = 0
EXIT_INVALID = 2
DEFAULT_CONFIG = Path("config/config.json")


@attrs.frozen(kw_only=True)
class CheckReport:
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def merge(self, other: CheckReport) -> CheckReport:
        return CheckReport(problems=self.problems + other.problems, notes=self.notes + other.notes)


# A step sees the loaded configuration and reports problems and notes; steps run in order.
CheckStep = Callable[[BotConfig], CheckReport]


def describe_market(market: MarketConfig) -> str:
    parts = [
        f"{market.name}: model {market.model.type}",
        f"base spread {market.base_spread * 10_000:g} bps",
        f"quote cap ${market.quote_notional_cap_usd:g}",
        f"replace threshold {market.replace_threshold_bps:g} bps",
        "post-only" if market.post_only else "may take",
    ]
    return ", ".join(parts)


def summarise(cfg: BotConfig) -> CheckReport:
    enabled = cfg.enabled_markets
    disabled = [m.name for m in cfg.markets if not m.enabled]
    notes = [f"markets enabled: {len(enabled)}" + (f" (disabled: {', '.join(disabled)})" if disabled else "")]
    notes += [f"  {describe_market(m)}" for m in enabled]
    notes.append(
        f"loop {cfg.quote_loop_ms} ms, replace coalesce {cfg.replace_coalesce_ms} ms, "
        f"dead man's switch {cfg.dead_mans_switch_sec} s, STP {cfg.stp}"
    )
    risk = cfg.risk
    notes.append(
        f"risk: net position ≤ ${risk.max_net_position_usd:g}, open orders ≤ {risk.max_open_orders} per market, "
        f"balance ≥ ${risk.min_balance_usd:g}"
    )
    return CheckReport(notes=tuple(notes))


OFFLINE_STEPS: tuple[CheckStep, ...] = (summarise,)


def run_checks(config_path: Path, steps: tuple[CheckStep, ...] = OFFLINE_STEPS) -> CheckReport:
    """Load the configuration, then run each step in order."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        return CheckReport(problems=tuple(exc.problems))
    report = CheckReport(notes=(f"{config_path}: configuration is valid",))
    for step in steps:
        report = report.merge(step(cfg))
    return report


# -- command ----------------------------------------------------------------------------------------


def handle(args: argparse.Namespace) -> int:
    if args.env_file is not None and not Path(args.env_file).is_file():
        print(f"check: --env-file {args.env_file}: env file not found", file=sys.stderr)
        return EXIT_INVALID
    try:
        target = resolve_target(args.network, args.endpoint)
    except UsageError as exc:
        print(f"check: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if target is None:
        return _offline(args)
    return _online(args, target)


def _offline(args: argparse.Namespace) -> int:
    report = run_checks(Path(args.config))
    if not report.ok:
        for line in report.problems:
            print(line, file=sys.stderr)
        count = len(report.problems)
        if count > 1:  # a single problem is its own one-line verdict
            print(f"{args.config}: {count} problems", file=sys.stderr)
        return EXIT_INVALID
    for line in report.notes:
        print(line)
    return EXIT_OK


def _online(args: argparse.Namespace, target: VenueTarget) -> int:
    from extmm.ops.logs import configure_logging

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"FAIL config: {line}")
        return EXIT_INVALID
    print(f"OK config: {args.config} is valid ({len(cfg.enabled_markets)} markets enabled)", flush=True)
    try:
        secrets: Secrets | SecretsError = load_secrets(args.env_file)
    except SecretsError as exc:
        secrets = exc
    # The venue's own retry chatter is not news here; the check lines say what failed.
    configure_logging(level="ERROR", stdlib_level="CRITICAL")
    print(f"checking against {target.label}", flush=True)
    if getattr(args, "trade_test", False) and target.network == "mainnet":
        print("check: --trade-test places real orders; it runs on testnet or a simulator, not mainnet",
              file=sys.stderr)
        return EXIT_INVALID
    try:
        results = trio.run(run_network_checks, cfg, target, secrets)
    except KeyboardInterrupt:
        return 130
    for result in results:
        print(result.line())
    failed = [r for r in results if r.passed is False]
    if failed:
        print(f"{len(failed)} check{'s' if len(failed) != 1 else ''} failed", file=sys.stderr)
        return EXIT_INVALID
    if getattr(args, "trade_test", False):
        return _trade_test(cfg, target, secrets)
    return EXIT_OK


def _trade_test(cfg: BotConfig, target: VenueTarget, secrets: Secrets | SecretsError) -> int:
    """`--trade-test` after every read-only check passed: see `extmm.commands._trade_test`."""
    from extmm.commands._trade_test import run_trade_test
    from extmm.runtime.app import wall_clock_ms

    trading = None
    if target.endpoint is not None:
        trading = check_credentials(secrets).trading
        if trading is None:
            print("FAIL trade test: needs all four credentials (it signs orders)")
            return EXIT_INVALID
    market = cfg.enabled_markets[0].name

    async def main() -> bool:
        async with open_venue(target, trading) as (venue, _):
            return await run_trade_test(
                venue, market, prefix=cfg.external_id_prefix, epoch_ms=wall_clock_ms,
                report=lambda step: print(step.line(), flush=True),
            )

    print(f"trade test on {market} (one post-only order of the minimum size, far from the touch)", flush=True)
    try:
        passed = trio.run(main)
    except KeyboardInterrupt:
        return 130
    if not passed:
        print("trade test failed", file=sys.stderr)
        return EXIT_INVALID
    print("trade test passed: place, replace and cancel work on this account; nothing of ours is open")
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate a configuration (offline), or also against a venue with --network/--endpoint",
        description=(
            "Validate a configuration file and print a short summary; exit 0 if valid, 2 with one "
            "'key.path: problem' line per problem otherwise. With --network or --endpoint it also "
            "checks, read-only (no orders): credentials, connectivity, streams, the account, every "
            "enabled market, fee rates and the configured sizes against the market minimums; one "
            "'OK …'/'FAIL …' line per check, exit 0 if all pass, 2 otherwise. --network paper checks "
            "against the embedded simulator."
        ),
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=str(DEFAULT_CONFIG),
        help=f"configuration file (default: {DEFAULT_CONFIG})",
    )
    add_venue_arguments(parser)
    parser.add_argument(
        "--trade-test",
        action="store_true",
        help="after the checks, arm the dead man's switch, place one post-only order of the minimum "
        "size far from the touch, replace it, cancel it, confirm nothing of ours is open and disarm "
        "(testnet or a simulator; refused on mainnet). Each step is printed with its latency; any "
        "failure cancels what it placed and exits 2",
    )
    parser.set_defaults(handler=handle)
